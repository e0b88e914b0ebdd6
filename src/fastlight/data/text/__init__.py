"""Text data for the language model (`lm`) and the ULMFiT classifier (`text_clf`), lessons 3-4.

  tokenize.py  fastai's rules + spaCy's rule-based English tokenizer, in parallel, cached
  vocab.py     the vocabulary (fastai's `make_vocab`: specials first, count order, padded to 8)
  sources.py   where the documents come from: PTB, WikiText-2, IMDb (sample and full), a folder
               or CSV of texts, Tiny Shakespeare, and synthetic twins with planted structure
  lm.py        `LMData`: the language-model stream (shuffled documents -> bs rows -> bptt windows)
  clas.py      `ClasData`: labelled documents, padded at the front, batched by similar length

What the tasks and the model see (after `setup`):
  LMData (lm.PTB, lm.WikiText2, lm.IMDbSample, lm.IMDb, lm.TextFiles, lm.Shakespeare, lm.SyntheticLM)
    batches (x, y): LongTensor (batch_size, seq_len), y = x shifted by one token; row r of a batch
    continues row r of the previous one (carry the hidden state); `bptt`, `variable_bptt` (scale
    the lr by x.size(1) / bptt); `vocab` (list of str); `dims = {"vocab_size"}`; `stats`.
  ClasData (clas.IMDbSample, clas.IMDb, clas.TextFiles, clas.SyntheticClas)
    batches (x, y): x LongTensor (batch, longest doc) padded at the front with xxpad (id 1), y class
    ids; `classes`; `vocab`; `dims = {"vocab_size", "n_classes"}`; `vocab_path` takes an LM run.
  Both write `<run folder>/vocab.json` (rank 0); `vocab.read_vocab(run folder or file)` reads it.

Nothing here imports fastai: the tests use it as the oracle.
"""
