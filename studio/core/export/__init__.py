"""Everything that leaves the studio: staged and atomic output folders, the adapter export, the merge, GGUF
and the Ollama Modelfile, the model card, the agreement check, and the jobs the Export dialog runs."""
