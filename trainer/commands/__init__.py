"""One module per CLI command, each a thin shell over the layers below."""
