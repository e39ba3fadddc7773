// Signed int8 x int8 multiply-accumulate into an ACC_W-bit two's complement accumulator.
//
// One step per clock with en = 1:  acc <= Q(base + a * b),  base = first ? 0 : acc.
// The 16-bit product is exact; Q is applied to the running sum at EVERY step:
//   SAT = 1: clamp to [-2**(ACC_W-1), 2**(ACC_W-1) - 1]   (emul: acc="int12", overflow="saturate")
//   SAT = 0: keep the low ACC_W bits (mod 2**ACC_W)        (emul: acc="int12", overflow="wrap")
// Golden model: emul.vectors.generate("mac", fmt="int8", acc=f"int{ACC_W}", overflow=..., k=...),
// i.e. emul.accumulate.dot(..., order="sequential") after every step.
//
// BUG != 0 injects a realistic defect (the negative bound clamps to -2**(ACC_W-1) + 1, as a
// symmetric saturator would) so the testbenches can prove that they detect a wrong result.
`timescale 1ns / 1ps
module mac_int8 #(
    parameter integer ACC_W = 12,
    parameter integer SAT = 1,
    parameter integer BUG = 0
) (
    input  wire                    clk,
    input  wire                    rst,    // synchronous: acc <= 0
    input  wire                    en,     // perform one step this cycle
    input  wire                    first,  // this step starts a new sequence (from +0)
    input  wire signed [7:0]       a,
    input  wire signed [7:0]       b,
    output reg  signed [ACC_W-1:0] acc
);
    localparam integer SUM_W = (ACC_W > 16 ? ACC_W : 16) + 2;  // holds any base + product
    localparam signed [SUM_W-1:0] MAXV = (1 <<< (ACC_W - 1)) - 1;
    localparam signed [SUM_W-1:0] MINV = (BUG != 0) ? -(1 <<< (ACC_W - 1)) + 1 : -(1 <<< (ACC_W - 1));

    wire signed [15:0]      prod = a * b;
    wire signed [SUM_W-1:0] base = first ? {SUM_W{1'b0}} : {{(SUM_W - ACC_W){acc[ACC_W-1]}}, acc};
    wire signed [SUM_W-1:0] sum  = base + {{(SUM_W - 16){prod[15]}}, prod};

    reg signed [ACC_W-1:0] next;
    always @* begin
        if (SAT != 0) begin
            if (sum > MAXV)
                next = MAXV[ACC_W-1:0];
            else if (sum < MINV)
                next = MINV[ACC_W-1:0];
            else
                next = sum[ACC_W-1:0];
        end else begin
            next = sum[ACC_W-1:0];
        end
    end

    always @(posedge clk) begin
        if (rst)
            acc <= {ACC_W{1'b0}};
        else if (en)
            acc <= next;
    end
endmodule
