"""Qt-free state of the tabs, observed by them: the one current run config (draft) the Dataset and Config tabs
both edit, the chosen data, the Config tab's decisions, the chat conversation, the Evaluate tab's columns and
results, and the config that continues a run with another method."""
