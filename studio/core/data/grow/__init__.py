"""Growing a small conversation dataset without teaching the wrong thing (issue 25), pure data work.

turkish (case, folding and suffixes of Turkish words), slots (the values a conversation carries from the user's
words into a tool call, and their shapes), vary (variants with new values put in consistently), recipe (the
recipe TOML: what to grow, how, and the paraphrases kept), record (the held-out originals by content hash, the
grown files and their provenance, the guard against a split that would leak). The paraphrase model call lives
above, in studio.core.chat.paraphrase.
"""
