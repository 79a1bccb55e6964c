"""Training itself: the loop (`loop.fit`), its side concerns as callbacks (`callbacks`), what
the data asks of the model (`task`), progress on the console, and the end of a run (`scoring`,
`outcome`)."""
