-- KEYS: inbox. ARGV: head. Creates the inbox holding only its head unless the key exists.
-- Returns the list's length when created, else 0.
if redis.call('EXISTS', KEYS[1]) == 0 then return redis.call('RPUSH', KEYS[1], ARGV[1]) end
return 0
