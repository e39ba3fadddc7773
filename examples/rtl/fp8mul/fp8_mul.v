// OCP FP8 E4M3 (e4m3fn) x E4M3 -> IEEE binary16 multiplier, combinational, round to nearest even.
//
// e4m3fn: bias 7, subnormals, no infinities, NaN = S.1111.111, max 448.
// The exact product of two e4m3fn values has at most 8 significant bits and lies in
// [2**-18, 448**2]; binary16 holds every such value exactly (subnormal step 2**-24), except
// that products of 2**16 and more overflow. So rounding only ever matters on overflow, where
// round-to-nearest-even gives +-inf. A NaN operand gives the canonical quiet NaN 0x7e00 with the
// sign of the first NaN operand (emul.arith's rule, as IEEE 754 propagation); zero and all other
// results have the sign sign(a) ^ sign(b).
// Golden model: emul.vectors.generate("mul", fmt="e4m3fn", out_fmt="fp16", sets="exhaustive").
//
// BUG != 0 injects a realistic defect (overflow saturates to +-65504 instead of +-inf) so the
// testbenches can prove that they detect a wrong result.
`timescale 1ns / 1ps
module fp8_mul #(
    parameter integer BUG = 0
) (
    input  wire [7:0]  a,
    input  wire [7:0]  b,
    output reg  [15:0] y
);
    wire       s = a[7] ^ b[7];
    wire [3:0] ea = a[6:3], eb = b[6:3];
    wire       nan_a   = (a[6:0] == 7'h7f), nan_b = (b[6:0] == 7'h7f);
    wire       zero_in = (a[6:0] == 7'h00) || (b[6:0] == 7'h00);

    // significands with the hidden bit, and exponents with subnormals read as exponent 1
    wire [7:0] sig = {4'd0, ea != 4'd0, a[2:0]} * {4'd0, eb != 4'd0, b[2:0]};
    wire [5:0] xa  = (ea == 4'd0) ? 6'd1 : {2'd0, ea};
    wire [5:0] xb  = (eb == 4'd0) ? 6'd1 : {2'd0, eb};

    // product = sig * 2**(xa + xb - 20); with L = position of the leading one of sig,
    // the binary16 biased exponent is E = L + xa + xb - 5 (normal when 1 <= E <= 30)
    function [2:0] lead_one(input [7:0] v);
        integer k;
        begin
            lead_one = 3'd0;
            for (k = 0; k < 8; k = k + 1)
                if (v[k]) lead_one = k[2:0];
        end
    endfunction

    wire [2:0]  lz   = lead_one(sig);
    wire [6:0]  esum = {4'd0, lz} + {1'b0, xa} + {1'b0, xb};        // E + 5
    // mantissa field: the bits below the leading one, moved to the top of 10 bits (the
    // leading one itself is shifted out of the 10-bit result)
    wire [9:0]  norm = {2'd0, sig} << (4'd10 - {1'b0, lz});
    wire [9:0]  subn = {2'd0, sig} << (xa + xb + 6'd4);             // product / 2**-24 (< 2**10)
    wire [4:0]  e16  = esum[4:0] - 5'd5;                            // E (mod 32; used for E <= 30)

    always @* begin
        if (nan_a || nan_b)
            y = {nan_a ? a[7] : b[7], 15'h7e00};
        else if (zero_in)
            y = {s, 15'd0};
        else if (esum >= 7'd36)                       // E >= 31: overflow
            y = (BUG != 0) ? {s, 15'h7bff} : {s, 5'h1f, 10'd0};
        else if (esum >= 7'd6)                        // E >= 1: normal, exact
            y = {s, e16, norm};
        else                                          // subnormal, exact
            y = {s, 5'd0, subn};
    end
endmodule
