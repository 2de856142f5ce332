"""Training runtime. The catalogs here are static tables (no torch at import) that
`dslc check` reads; running them lives beside them."""
