"""The language server (`dslc lsp`): dslc's checks and knowledge, served to editors.

analysis: checking open documents (their unsaved text); features: hovers, definitions, symbols,
completions, references and inlay hints over a check; server: the protocol (pygls), imported by
the command only.
"""
