-- Sweep. ARGV: 1 now. Answers how many expired entries were removed.
return sweep()
