"""Paper protocols packaged for the command line and the benchmarks."""
