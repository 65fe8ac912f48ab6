"""`foundry serve`: the command registry over HTTP (docs/http.md)."""
