"""Slots of the parameter tuple that describes (format, rounding, overflow, SR) to the kernels.

Pure Python (no Numba), so that building parameters does not import the kernels.
"""

KIND, M, EMIN, EMAX, MAXC, SUB, BITS, NEGZERO, NANC, INFC, OVF_POS, OVF_NEG = range(12)
NEAREST, K0, KS, KL, SR, SR_BITS, SR_CMP, RULE, INF_POS, INF_NEG, BIAS, FNUZ, IEEE = range(12, 25)
FRAC, SIGNED, MAXRAW, NEGMAG = M, EMIN, MAXC, EMAX  # fixed-point reuse of the float slots
NPARAMS = 25
RULE_SATURATE, RULE_SAT_ZERO, RULE_SAT_SYM, RULE_WRAP, RULE_WRAP_SM = 1, 2, 3, 4, 5

__all__ = [name for name in dir() if name.isupper()]
