// $readmemh testbench for fp8_mul, driven by a file from
//   emul vectors mul --fmt e4m3fn --out-fmt fp16 --exhaustive -o mul.hex
// Run: +vectors=mul.hex +count=N (N = the "lines:" value in the file's header).
// Each line is a_b_y: the word {a[7:0], b[7:0], y[15:0]}; y is emul's product code.
// With +out=FILE it also writes the DUT's y per vector, one line each, in hex (for
//   emul vectors compare VECTORS FILE).
// Prints "EMUL-TB PASS <n>" or "EMUL-TB FAIL <mismatches> <n>" and exits with $fatal on failure.
`timescale 1ns / 1ps
module tb_fp8_mul;
    parameter integer BUG = 0;
    parameter integer DEPTH = 1 << 17;

    reg [31:0] mem [0:DEPTH-1];
    reg [7:0] a = 8'd0, b = 8'd0;
    wire [15:0] y;
    reg [15:0] want;
    reg [1023:0] file, outfile;
    integer count, i, bad, fd;

    fp8_mul #(.BUG(BUG)) dut (.a(a), .b(b), .y(y));

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
        for (i = 0; i < count; i = i + 1) begin
            {a, b, want} = mem[i];
            #1;
            if (fd != 0) $fwrite(fd, "%h\n", y);
            if (y !== want) begin
                if (bad < 10)
                    $display("EMUL-TB MISMATCH line %0d: a=%h b=%h y=%h emul=%h", i, a, b, y, want);
                bad = bad + 1;
            end
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
