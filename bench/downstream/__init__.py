"""The pipeline frames -> Embedding -> LSTM judged downstream (``python -m bench downstream``).

``downstream.py`` trains each autoencoder, freezes it, embeds consecutive windows of real images
and trains an LSTM to predict the next window's embedding, scored on held-out bands against
"repeat the last embedding"; ``output.py`` writes its csv, markdown and curves; ``command.py`` is
the command. The speed of the same pipeline is the ``sequence-infer``/``sequence-train`` modes of
every sweep (``bench/core/steps.py``, ``bench/core/sequence_metrics.py``, ``bench/matrices/sequence.toml``).
"""
