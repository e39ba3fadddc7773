// $readmemh testbench for sr_cast, driven by a file from
//   emul vectors quantize --in-fmt "fx<16,8>" --fmt int8 --rounding stochastic --sr-bits 8 \
//       --random-source lfsr --lfsr-seed 44257 --exhaustive -o sr.hex
// Run: +vectors=sr.hex +count=N (N = the "lines:" value in the file's header).
// Each line is x_u_y: the word {x[15:0], u[7:0], y[7:0]}: the input, the LFSR word emul used
// for it (line i: the state after i + 1 steps) and emul's result. Both u and y are checked.
// With +out=FILE it also writes the DUT's x_u_y per vector, one line each, in hex (for
//   emul vectors compare VECTORS FILE).
// Prints "EMUL-TB PASS <n>" or "EMUL-TB FAIL <mismatches> <n>" and exits with $fatal on failure.
`timescale 1ns / 1ps
module tb_sr_cast;
    parameter integer BUG = 0;
    parameter integer DEPTH = 1 << 17;

    reg [31:0] mem [0:DEPTH-1];
    reg clk = 1'b0, rst = 1'b1, en = 1'b0;
    reg [15:0] x = 16'd0;
    wire [7:0] y, u;
    reg [7:0] want_y, want_u;
    reg [1023:0] file, outfile;
    integer count, i, bad, fd;

    sr_cast #(.BUG(BUG)) dut (.clk(clk), .rst(rst), .en(en), .x(x), .y(y), .u(u));

    /* verilator lint_off BLKSEQ */
    always #5 clk = ~clk;
    /* verilator lint_on BLKSEQ */

    initial begin
        if (!$value$plusargs("vectors=%s", file) || !$value$plusargs("count=%d", count)) begin
            $display("EMUL-TB ERROR: need +vectors=FILE +count=N");
            $fatal(1);
        end
        if (count < 1 || count > DEPTH) begin
            $display("EMUL-TB ERROR: count=%0d outside 1..DEPTH=%0d", count, DEPTH);
            $fatal(1);
        end
        $readmemh(file, mem, 0, count - 1);
        fd = 0;
        if ($value$plusargs("out=%s", outfile)) begin
            fd = $fopen(outfile, "w");
            if (fd == 0) begin
                $display("EMUL-TB ERROR: cannot open the +out file");
                $fatal(1);
            end
        end
        bad = 0;
        @(negedge clk) rst = 1'b0;
        for (i = 0; i < count; i = i + 1) begin
            {x, want_u, want_y} = mem[i];
            en = 1'b1;
            @(posedge clk) #1;
            if (fd != 0) $fwrite(fd, "%h_%h_%h\n", x, u, y);
            if (y !== want_y || u !== want_u) begin
                if (bad < 10)
                    $display("EMUL-TB MISMATCH line %0d: x=%h u=%h y=%h emul: u=%h y=%h",
                             i, x, u, y, want_u, want_y);
                bad = bad + 1;
            end
            @(negedge clk);
        end
        if (fd != 0) $fclose(fd);
        if (bad == 0) begin
            $display("EMUL-TB PASS %0d", count);
            $finish;
        end else begin
            $display("EMUL-TB FAIL %0d %0d", bad, count);
            $fatal(1);
        end
    end
endmodule
