-- The bench's hand-written at-least-once reference (eventfleet/bench/loop_mixed.py), not
-- eventfleet's own code. KEYS: stock, price, balance, outcomes. ARGV: item, user, qty, order.
local item, user, qty, order = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local stock = redis.call('HGET', KEYS[1], item)
local function reject(reason)
  redis.call('XADD', KEYS[4], '*', 'order', order, 'status', 'rejected', 'reason', reason)
  return 0
end
if not stock then return reject('unknown_item') end
if tonumber(stock) < qty then return reject('out_of_stock') end
local amount = tonumber(redis.call('HGET', KEYS[2], item)) * qty
local balance = tonumber(redis.call('HGET', KEYS[3], user) or '0')
if balance < amount then return reject('insufficient_funds') end
redis.call('HINCRBY', KEYS[1], item, -qty)
redis.call('HINCRBY', KEYS[3], user, -amount)
redis.call('XADD', KEYS[4], '*', 'order', order, 'status', 'confirmed', 'amount', amount)
return 1
