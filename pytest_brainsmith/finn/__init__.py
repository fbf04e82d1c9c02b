"""The FINN adapter: everything that knows FINN (its steps and config fields, how to
run a segment through its builder, where it writes its reports). Imports no pytest."""
