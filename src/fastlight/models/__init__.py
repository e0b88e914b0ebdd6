"""Every plain `nn.Module` (no Lightning in here): MNIST's nets (`mnist`), entity embeddings and
`SigmoidRange` (`embeddings`, shared by collab, tabular and vision), collab's dot product and
EmbeddingNN (`collab`), fastai's TabularModel (`tabular`), the ResNet body + fastai head (`vision`),
and the later lessons' U-Net, critics and AWD-LSTM.
"""
