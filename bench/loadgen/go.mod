module casino-aggregator/bench/loadgen

go 1.22
