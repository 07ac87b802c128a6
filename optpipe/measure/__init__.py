"""Speed and memory measurement of candidates (benchmark) and the isolated worker that runs it."""
