// Stochastic-rounding cast fx<16,8> -> int8 (saturating), fed by a 16-bit Fibonacci LFSR.
//
// x is a signed Q8.8 value (raw / 256); y = sat8(floor(x) + carry) where carry = 1 iff
// frac(x) * 256 + u >= 256 for the 8-bit random word u, i.e. y = sat8((raw + u) >>> 8):
// emul's sr_method="add" with sr_bits=8 (round toward +inf with probability frac(x), up to 2**-8).
//
// The LFSR follows emul.random.lfsr(kind="fibonacci", output="state", width=16,
// taps=(16, 14, 13, 11)): one step per conversion, f = s[0] ^ s[2] ^ s[3] ^ s[5] (bit 16 - t of
// each tap t), s <= {f, s[15:1]}; conversion i uses u = the low 8 bits of the state after i + 1
// steps. Golden model:
//   emul vectors quantize --in-fmt "fx<16,8>" --fmt int8 --rounding stochastic --sr-bits 8 \
//       --random-source lfsr --lfsr-seed 44257 --exhaustive
//
// BUG != 0 injects a realistic defect (the random word is compared, not added: carry iff
// u < frac, i.e. sr_method="compare" where the spec says "add").
`timescale 1ns / 1ps
module sr_cast #(
    parameter [15:0] SEED = 16'hACE1,
    parameter integer BUG = 0
) (
    input  wire              clk,
    input  wire              rst,   // synchronous: LFSR <= SEED
    input  wire              en,    // convert x this cycle (and step the LFSR)
    input  wire signed [15:0] x,
    output reg  signed [7:0] y,     // registered result
    output reg  [7:0]        u      // the random word used (for debug and checking)
);
    reg  [15:0] s;
    wire        fb  = s[0] ^ s[2] ^ s[3] ^ s[5];
    wire [15:0] nxt = {fb, s[15:1]};
    wire [7:0]  r   = nxt[7:0];

    wire        carry = (BUG != 0) ? (r < x[7:0]) : ({1'b0, x[7:0]} + {1'b0, r} >= 9'd256);
    wire signed [8:0] q = {x[15], x[15:8]} + {8'd0, carry};   // floor(x) + carry, 9 bits

    always @(posedge clk) begin
        if (rst) begin
            s <= SEED;
            y <= 8'sd0;
            u <= 8'd0;
        end else if (en) begin
            s <= nxt;
            u <= r;
            y <= (q > 9'sd127) ? 8'sd127 : q[7:0];   // q >= -128 always
        end
    end
endmodule
