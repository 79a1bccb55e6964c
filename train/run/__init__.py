"""The run dir and every file in it: where a run writes (`rundir.RunDir`: paths, the lock, the
one door for reading and writing), what one invocation claimed (`claims.Claims`), the typed
files on one format scheme (`formats`: `checkpoint`, `record` for run.json, `metrics`, `meta`),
the no-follow atomic writer (`files`), and what a run continues (`resume`, `elastic`)."""
