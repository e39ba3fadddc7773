"""Golden model of N:M sparsity (docs/sparsity.md; papers [A] and [B] of docs/references.md) over Fraction and int.

Independent of emul (imports nothing from it) and deliberately written differently:

* MVUE "exact": marginals by sorting (the textbook water-filling), then plain systematic
  sampling over *all* m elements (capped ones have pi = 1, zeros pi = 0), enumerated over u;
* MVUE "approx": the 12 ordered draws, with inclusion probabilities obtained by adding up the
  probabilities of the outcomes (not from a formula);
* the three-branch joint law of 2:4 (different joint, same marginals);
* top-n, greedy and brute-force optimal transposable masks on one block/tile;
* mask counts by recursion over the multiset of remaining column capacities.

Laws are dicts {outcome tuple of Fractions: probability Fraction}.
"""

import itertools
import math
from fractions import Fraction


def to_fraction(v):
    """An exact Fraction from an int, float, Fraction or numpy scalar (finite)."""
    if isinstance(v, Fraction):
        return v
    f = Fraction(v) if isinstance(v, int) else Fraction(float(v))
    return f


def sign(v):
    return (v > 0) - (v < 0)


# ----------------------------------------------------------------------------- MVUE


def optimal_marginals(block, n):
    """Minimum-variance inclusion probabilities: pi_i = min(1, c |x_i|), sum pi = n.

    Sort by |x| descending; cap the k largest where k is the smallest count for which the
    (k+1)-th largest satisfies (n - k) a <= (sum of the rest): then c = (n - k) / rest.
    Blocks with at most n non-zeros: pi = 1 on the non-zeros.
    """
    x = [to_fraction(v) for v in block]
    a = [abs(v) for v in x]
    if sum(1 for v in a if v != 0) <= n:
        return [Fraction(1) if v != 0 else Fraction(0) for v in a]
    order = sorted(range(len(a)), key=lambda i: -a[i])
    k = 0
    while True:
        rest = sum(a[i] for i in order[k:])
        if (n - k) * a[order[k]] <= rest:
            break
        k += 1
    c = Fraction(n - k) / rest
    pi = [min(Fraction(1), c * v) for v in a]
    assert sum(pi) == n
    return pi


def _systematic_law(x, pi):
    """Law of systematic sampling in index order: element i is taken iff some integer j has
    PI_(i-1) <= u + j < PI_i (PI = running sum of pi), value x_i / pi_i; u ~ U[0, 1)."""
    cum = [Fraction(0)]
    for p in pi:
        cum.append(cum[-1] + p)
    cuts = sorted({Fraction(0)} | {c - math.floor(c) for c in cum} | {Fraction(1)})

    def count(end, u):  # points u, u+1, ... below `end`
        return max(0, math.ceil(end - u))

    law = {}
    for lo, hi in zip(cuts, cuts[1:]):
        outcome = tuple(
            x[i] / pi[i] if count(cum[i + 1], lo) > count(cum[i], lo) else Fraction(0)
            for i in range(len(x))
        )
        law[outcome] = law.get(outcome, Fraction(0)) + (hi - lo)
    return law


def mvue_law(block, n, method="exact"):
    """Every outcome of one MVUE block with its probability: {outcome: probability}."""
    x = [to_fraction(v) for v in block]
    if method == "exact":
        pi = optimal_marginals(x, n)
        if all(p in (0, 1) for p in pi):
            return {tuple(v if p else Fraction(0) for v, p in zip(x, pi)): Fraction(1)}
        return _systematic_law(x, pi)
    if method == "approx":
        assert (n, len(x)) == (2, 4)
        a = [abs(v) for v in x]
        if sum(1 for v in a if v != 0) <= 2:
            return {tuple(x): Fraction(1)}
        s = sum(a)
        draws = {}
        for f, g in itertools.permutations(range(4), 2):
            if a[f] == 0 or a[g] == 0:
                continue
            draws[(f, g)] = a[f] / s * a[g] / (s - a[f])
        pi = [sum(p for fg, p in draws.items() if i in fg) for i in range(4)]
        law = {}
        for (f, g), p in draws.items():
            outcome = tuple(x[i] / pi[i] if i in (f, g) else Fraction(0) for i in range(4))
            law[outcome] = law.get(outcome, Fraction(0)) + p
        return law
    raise ValueError(method)


def mvue_outcome_at(block, n, u, method="exact"):
    """The outcome for given uniforms (exact real arithmetic): ``u`` a Fraction in [0, 1) for
    "exact", a pair (u0, u1) for "approx" (inverse-CDF draws in index order, '<')."""
    x = [to_fraction(v) for v in block]
    if method == "exact":
        pi = optimal_marginals(x, n)
        cum = [Fraction(0)]
        for p in pi:
            cum.append(cum[-1] + p)
        count = lambda end: max(0, math.ceil(end - u))  # noqa: E731
        return tuple(x[i] / pi[i] if count(cum[i + 1]) > count(cum[i]) else Fraction(0)
                     for i in range(len(x)))
    a = [abs(v) for v in x]
    if sum(1 for v in a if v != 0) <= 2:
        return tuple(x)
    law = mvue_law(x, 2, "approx")
    s = sum(a)
    picked = []
    for draw in u:
        w = [0 if i in picked else a[i] for i in range(4)]
        tot = sum(w)
        run = Fraction(0)
        for i in range(4):
            run += w[i]
            if w[i] != 0 and draw < run / tot:
                picked.append(i)
                break
    for outcome in law:
        if all((outcome[i] != 0) == (i in picked) for i in range(4)):
            return outcome
    raise AssertionError((x, picked, s))


def mvue24_closed_form(block):
    """The three-branch joint law over kept pairs of an exact 2:4 MVUE.

    Returns {outcome: probability}; valid for blocks with at least 3 non-zeros."""
    x = [to_fraction(v) for v in block]
    a = [abs(v) for v in x]
    idx = sorted(range(4), key=lambda i: (a[i], i))  # ascending, stable
    a1, a2, a3, a4 = (a[i] for i in idx)
    s = a1 + a2 + a3 + a4
    if a1 + a2 + a3 - a4 <= 0:  # Case II
        r = a1 + a2 + a3
        pairs = {(1, 4): a1 / r, (2, 4): a2 / r, (3, 4): a3 / r}
        values = {4: a4}
        small = r
    else:
        if 2 * a1 + a3 - a4 > 0:  # Case Ia
            pairs = {(1, 3): (2 * a1 + a3 - a4) / 2, (1, 4): (2 * a1 - a3 + a4) / 2,
                     (2, 3): (2 * a2 + a3 - a4) / 2, (2, 4): (2 * a2 - a3 + a4) / 2,
                     (3, 4): -a1 - a2 + a3 + a4}
        else:  # Case Ib
            pairs = {(1, 4): 2 * a1, (2, 3): a1 + a2 + a3 - a4,
                     (2, 4): -a1 + a2 - a3 + a4, (3, 4): -a1 - a2 + a3 + a4}
        pairs = {k: v / s for k, v in pairs.items()}
        values = {}
        small = s / 2
    law = {}
    for (p, q), prob in pairs.items():
        if prob == 0:
            continue
        out = [Fraction(0)] * 4
        for rank in (p, q):
            i = idx[rank - 1]
            out[i] = x[i] if rank in values else sign(x[i]) * small  # Case II: a_(4) as is
        law[tuple(out)] = law.get(tuple(out), Fraction(0)) + prob
    return law


def expectation(law):
    m = len(next(iter(law)))
    return tuple(sum(p * o[i] for o, p in law.items()) for i in range(m))


def total_variance(law, block):
    x = [to_fraction(v) for v in block]
    return sum(p * sum((o[i] - x[i]) ** 2 for i in range(len(x))) for o, p in law.items())


def min_total_variance(block, n):
    """sum a_i^2 / pi_i - sum a_i^2 over the optimal marginals (terms with pi_i = 0 are 0)."""
    x = [to_fraction(v) for v in block]
    pi = optimal_marginals(x, n)
    return sum(v * v / p - v * v for v, p in zip(x, pi) if p != 0)


# ----------------------------------------------------------------------------- top-n


def nm_mask_block(block, n, ties="low_index"):
    """Keep the n largest |x| (NaN largest); ties by index (lower or higher wins)."""
    def key(i):
        v = block[i]
        nan = v != v
        inf = not nan and isinstance(v, float) and abs(v) == float("inf")
        mag = 0 if nan or inf else abs(to_fraction(v))
        return (2 if nan else (1 if inf else 0), mag, -i if ties == "low_index" else i)

    keep = sorted(range(len(block)), key=key, reverse=True)[:n]
    return [i in keep for i in range(len(block))]


# ----------------------------------------------------------------------------- transposable


def greedy_tile(tile, n, early_stop_at=None):
    """The greedy 2-approximation on one m x m tile (lists), visiting (-|w|, flat index).
    early_stop_at: stop before this visiting step (for the batch-global reference stop)."""
    m = len(tile)
    cells = sorted(((i, j) for i in range(m) for j in range(m)),
                   key=lambda ij: (-abs(to_fraction(tile[ij[0]][ij[1]])), ij[0] * m + ij[1]))
    mask = [[False] * m for _ in range(m)]
    rows = [0] * m
    cols = [0] * m
    for step, (i, j) in enumerate(cells):
        if early_stop_at is not None and step >= early_stop_at:
            break
        if rows[i] < n and cols[j] < n:
            mask[i][j] = True
            rows[i] += 1
            cols[j] += 1
    return mask


def greedy_batch_reference_stop(tiles, n):
    """The reference code's batch loop: at step k >= n, stop every tile if the step-k candidate
    of every tile has a full row and a full column."""
    m = len(tiles[0])
    orders = [sorted(((i, j) for i in range(m) for j in range(m)),
                     key=lambda ij: (-abs(to_fraction(t[ij[0]][ij[1]])), ij[0] * m + ij[1]))
              for t in tiles]
    masks = [[[False] * m for _ in range(m)] for _ in tiles]
    rows = [[0] * m for _ in tiles]
    cols = [[0] * m for _ in tiles]
    for k in range(m * m):
        if k >= n and all(rows[b][orders[b][k][0]] >= n and cols[b][orders[b][k][1]] >= n
                          for b in range(len(tiles))):
            break
        for b in range(len(tiles)):
            i, j = orders[b][k]
            if rows[b][i] < n and cols[b][j] < n:
                masks[b][i][j] = True
                rows[b][i] += 1
                cols[b][j] += 1
    return masks


def regular_masks(m, n):
    """All m x m 0/1 tiles with exactly n per row and column, as sorted flat kept-index tuples,
    generated in lexicographic order."""
    out = []

    def rec(row, caps, chosen):
        if row == m:
            out.append(tuple(chosen))
            return
        for cols in itertools.combinations(range(m), n):
            if all(caps[c] > 0 for c in cols):
                for c in cols:
                    caps[c] -= 1
                rec(row + 1, caps, chosen + [row * m + c for c in cols])
                for c in cols:
                    caps[c] += 1

    rec(0, [n] * m, [])
    return out


def optimal_tile_bruteforce(tile, n):
    """Maximum exact sum of kept |w| over all tiles with n per row and column; ties: the first
    (lexicographically smallest sorted flat kept-index list).  Returns (mask, value)."""
    m = len(tile)
    a = [abs(to_fraction(tile[k // m][k % m])) for k in range(m * m)]
    best = None
    best_v = None
    for cand in regular_masks(m, n):
        v = sum(a[k] for k in cand)
        if best_v is None or v > best_v:
            best, best_v = cand, v
    mask = [[(i * m + j) in best for j in range(m)] for i in range(m)]
    return mask, best_v


def optimal_tile_exact(tile, n):
    """The optimal transposable tile by an exact min-cost flow on Python integers (any m).

    Every |w| is an exact dyadic rational, so |w| * 2^L is an integer for a large enough L.  The
    lexicographic rule is folded into the integer costs: edge k (flat index) gets
    |w_k| 2^L 2^(m^2) + 2^(m^2 - 1 - k).  The bonus terms of any mask sum to less than 2^(m^2), so
    a maximum of these costs has the maximum kept sum, and among those the largest bonus sum: the
    mask containing the smallest flat index of any symmetric difference, i.e. the lexicographically
    smallest sorted kept-index list.  The flow (n per row and column) is built by successive
    shortest paths found with Bellman-Ford on the residual graph (no potentials, no heap).
    Returns (mask, value) like optimal_tile_bruteforce."""
    m = len(tile)
    mm = m * m
    a = [abs(to_fraction(tile[k // m][k % m])) for k in range(mm)]
    scale = max(v.denominator for v in a)  # a power of two: every a * scale is an integer
    cost = [int(v * scale) * 2 ** mm + 2 ** (mm - 1 - k) for k, v in enumerate(a)]
    # nodes: 0 = source, 1..m = rows, m+1..2m = columns, 2m+1 = sink
    src, snk = 0, 2 * m + 1
    cap, wgt, head, arcs = [], [], [], [[] for _ in range(2 * m + 2)]

    def arc(u, v, c, w):
        for x, y, cc, ww in ((u, v, c, w), (v, u, 0, -w)):
            arcs[x].append(len(cap))
            head.append(y)
            cap.append(cc)
            wgt.append(ww)

    for i in range(m):
        arc(src, 1 + i, n, 0)
        arc(1 + m + i, snk, n, 0)
    edge_arc = {}
    for k in range(mm):
        edge_arc[k] = len(cap)
        arc(1 + k // m, 1 + m + k % m, 1, -cost[k])  # minimise the negated cost
    for _ in range(n * m):
        dist = [None] * (2 * m + 2)
        via = [None] * (2 * m + 2)
        dist[src] = 0
        for _ in range(2 * m + 1):
            changed = False
            for u in range(2 * m + 2):
                if dist[u] is None:
                    continue
                for e in arcs[u]:
                    if cap[e] > 0 and (dist[head[e]] is None or dist[u] + wgt[e] < dist[head[e]]):
                        dist[head[e]] = dist[u] + wgt[e]
                        via[head[e]] = e
                        changed = True
            if not changed:
                break
        v = snk
        while v != src:
            e = via[v]
            cap[e] -= 1
            cap[e ^ 1] += 1
            v = head[e ^ 1]
    kept = [k for k in range(mm) if cap[edge_arc[k]] == 0]
    mask = [[(i * m + j) in kept for j in range(m)] for i in range(m)]
    return mask, sum(a[k] for k in kept)


def count_regular(m, n):
    """Number of m x m 0/1 tiles with n per row and column: rows one at a time, memoised on the
    sorted tuple of remaining column capacities."""
    memo = {}

    def rec(rows_left, caps):
        if rows_left == 0:
            return 1 if all(c == 0 for c in caps) else 0
        key = (rows_left, caps)
        if key not in memo:
            total = 0
            for cols in itertools.combinations(range(m), n):
                if all(caps[c] > 0 for c in cols):
                    new = list(caps)
                    for c in cols:
                        new[c] -= 1
                    total += rec(rows_left - 1, tuple(sorted(new)))
            memo[key] = total
        return memo[key]

    return rec(m, tuple([n] * m))
