"""Delta updates: fetch only what changed between two versions of a release.

A publisher describes each file of a new release by the content-defined chunks
of its content (:mod:`.chunker`) in a *delta index* (:mod:`.index`). A client
chunks the files it already has the same way, reuses every chunk it finds, and
fetches only the rest. The index is a hint: whatever it rebuilds from it is
still checked against the torrent's piece hashes before it counts.

Everything here is sans-I/O except the helpers that read a release from disk.
"""
