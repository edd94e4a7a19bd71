"""Training data from any source to one chat form: reading sources (files, folders, Hub ids) and their
encoding, detecting the record shape, normalising, the Arrow table and its cache, chat-template tokens with
the trained-token mask, the token preview and statistics, and `file:line: reason` issues."""
