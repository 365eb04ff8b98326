"""Speech: the mini-LibriSpeech builder, LibriSpeech preparation, the CPC audio model."""
