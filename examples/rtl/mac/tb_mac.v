// $readmemh testbench for mac_int8, driven by a file from
//   emul vectors mac --fmt int8 --acc int12 --overflow saturate --k 16 --count 1000 --seed 1 -o mac.hex
// Run: +vectors=mac.hex +count=N (N = the "lines:" value in the file's header).
// Each line is one step: first_a_b_acc, i.e. the word {first (1 bit in a hex digit), a[7:0], b[7:0],
// acc[ACC_W-1:0] (zero-extended to whole hex digits)}; acc is emul's accumulator after the step.
// With +out=FILE it also writes the DUT's acc per vector, one line each, in hex (for
//   emul vectors compare VECTORS FILE).
// Prints "EMUL-TB PASS <n>" or "EMUL-TB FAIL <mismatches> <n>" and exits with $fatal on failure.
`timescale 1ns / 1ps
module tb_mac;
    parameter integer ACC_W = 12;
    parameter integer SAT = 1;
    parameter integer BUG = 0;
    parameter integer DEPTH = 1 << 20;

    localparam integer ACC_D = (ACC_W + 3) / 4 * 4;   // accumulator field, whole hex digits
    localparam integer W = 4 + 8 + 8 + ACC_D;

    reg [W-1:0] mem [0:DEPTH-1];
    reg clk = 1'b0, rst = 1'b1, en = 1'b0, first = 1'b0;
    reg [7:0] a = 8'd0, b = 8'd0;
    wire [ACC_W-1:0] acc;
    reg [ACC_W-1:0] want;
    reg [W-1:0] line;
    reg [1023:0] file, outfile;
    integer count, i, bad, fd;

    mac_int8 #(.ACC_W(ACC_W), .SAT(SAT), .BUG(BUG)) dut (
        .clk(clk), .rst(rst), .en(en), .first(first), .a(a), .b(b), .acc(acc));

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
            line = mem[i];
            first = line[W-4];
            a = line[ACC_D+15:ACC_D+8];
            b = line[ACC_D+7:ACC_D];
            want = line[ACC_W-1:0];
            en = 1'b1;
            @(posedge clk) #1;
            if (fd != 0) $fwrite(fd, "%h\n", acc);
            if (acc !== want) begin
                if (bad < 10)
                    $display("EMUL-TB MISMATCH line %0d: first=%0d a=%h b=%h acc=%h emul=%h",
                             i, first, a, b, acc, want);
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
