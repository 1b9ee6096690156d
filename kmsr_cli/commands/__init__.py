"""One thin module per command; each calls the pipeline library and formats the result."""
