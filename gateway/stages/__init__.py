"""Request-path stages: each optimizer and rule the request path runs, behind one protocol
(`base.Stage`), in the order `registry.STAGES` gives."""
