-- Length. ARGV: 1 now. Answers the number of live entries.
sweep()
return redis.call('LLEN', LIST)
