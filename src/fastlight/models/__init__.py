"""Plain `nn.Module`s the tasks share (embeddings, heads, ...); no Lightning in here."""
