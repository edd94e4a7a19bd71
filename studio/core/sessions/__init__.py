"""Qt-free state of the tabs: what the Dataset, Config and Chat tabs show and edit, observed by them."""
