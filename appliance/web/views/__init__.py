"""Request handlers, one module per part of the page; the route table is in ``routes.py``."""
