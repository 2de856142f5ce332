"""The graph IR: dimensions (possibly symbolic), tensor values, the graph and its helpers."""
