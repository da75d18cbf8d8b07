-- Shared by fenced_read and xadd_many.
-- move_inbox(stream, inbox, limit, max_element, max_events, max_chars, by) moves up to `limit`
-- inbox elements (element 1, the head, stays) into the stream, in order, then trims them with
-- one LTRIM. Flat JSON objects of at most max_element bytes are joined into bundles of up to
-- max_events events and max_chars characters. `by` is nil for the shared (legacy) inbox, where
-- any other element gets an entry of its own; for a producer's own inbox it is the producer's
-- name, which every entry moved carries (field `by`: the worker stamps who wrote it, the
-- producer cannot), and any other element is dropped, never moved (counted). Returns the
-- elements moved, the elements dropped and, when the stream refused an entry, why.
-- The chain (tamper evidence for inbox cuts): every entry moved carries `tail`, the SHA-1 of
-- its last element; the first entry of a move also carries `head`, the SHA-1 of the head
-- element before the move (the previous move's last element, or init's head). A cut of
-- elements not yet moved (an LTRIM) makes a later move's `head` differ from the `tail` before
-- it, which `eventfleet verify` reports. Dropped elements are outside the chain: when the last
-- element taken was dropped, the head is set back to the last element moved (LSET).
local function move_inbox(stream, inbox, limit, max_element, max_events, max_chars, by)
  local items = redis.call('LRANGE', inbox, 0, limit)
  local head = table.remove(items, 1)
  local moved, taken, dropped, blocked = 0, 0, 0, nil
  local bundle, size, last_moved = {}, 0, nil
  local function add(text, n, last)
    local ok, id
    local f = {'event', text, 'via', 'inbox'}
    if by then f[5] = 'by'; f[6] = by end
    f[#f + 1] = 'tail'; f[#f + 1] = redis.sha1hex(last)
    if moved == 0 then f[#f + 1] = 'head'; f[#f + 1] = redis.sha1hex(head) end
    ok, id = pcall(redis.call, 'XADD', stream, 'NOMKSTREAM', '*', unpack(f))
    if not ok or not id then
      blocked = ok and 'the stream does not exist' or tostring(id.err or id)
      return false
    end
    moved = moved + n
    taken = taken + n
    last_moved = last
    return true
  end
  local function flush()
    local n = #bundle
    if n == 0 then return true end
    local last = bundle[n]
    local text = n == 1 and bundle[1] or ('[' .. table.concat(bundle, ',') .. ']')
    bundle, size = {}, 0
    return add(text, n, last)
  end
  for i = 1, #items do
    local it = items[i]
    if #it <= max_element and string.find(it, '^%s*{[^{}%[%]]*}%s*$') then
      if #bundle >= max_events or size + #it > max_chars then
        if not flush() then break end
      end
      bundle[#bundle + 1] = it
      size = size + #it + 1
    elseif by then
      if not flush() then break end
      dropped = dropped + 1
      taken = taken + 1
    elseif not flush() or not add(it, 1, it) then
      break
    end
  end
  if not blocked then flush() end
  if taken > 0 then
    redis.call('LTRIM', inbox, taken, -1)
    if moved < taken then
      -- the new head is the last element taken; the chain wants the last one moved
      local keep = last_moved or head
      if redis.call('LINDEX', inbox, 0) ~= keep then redis.call('LSET', inbox, 0, keep) end
    end
  end
  return moved, dropped, blocked
end

-- bound_inbox(inbox, max_len, max_bytes): a producer's own inbox holds at most max_len
-- events and about max_bytes bytes (MEMORY USAGE, sampled); what lies past the bound was
-- refused by the client (or pushed around it) and is cut from the end. Returns the elements
-- cut and the elements left (the head not counted).
local function bound_inbox(inbox, max_len, max_bytes)
  local n = redis.call('LLEN', inbox) - 1
  if n <= 0 then return 0, 0 end
  local keep = n
  if keep > max_len then keep = max_len end
  local mem = tonumber(redis.call('MEMORY', 'USAGE', inbox, 'SAMPLES', 5) or 0)
  if mem > max_bytes then
    local fit = math.floor(max_bytes * (n + 1) / mem) - 1
    if fit < keep then keep = fit > 0 and fit or 0 end
  end
  if keep < n then
    redis.call('LTRIM', inbox, 0, keep)
    return n - keep, keep
  end
  return 0, n
end

-- move_inboxes(stream, dropped_key, inboxes, names, limit, max_element, max_events,
-- max_chars, own_max_element, max_len, max_bytes): the move of every inbox of one shard.
-- inboxes[1] is the shared (legacy) inbox (names[1] is false: its entries carry no `by`), the
-- others producers' own inboxes, each first held to its bound (bound_inbox). The `limit` is
-- shared fairly: each inbox with data moves up to its share, so a flooding producer cannot
-- take the batch of the others. What is cut or dropped is counted per producer name in the
-- hash dropped_key. Returns the elements moved and, when the stream refused, why.
local function move_inboxes(stream, dropped_key, inboxes, names, limit, max_element,
                            max_events, max_chars, own_max_element, max_len, max_bytes)
  local lens = {}
  local busy = 0
  for i = 1, #inboxes do
    local n
    if names[i] then
      local cut
      cut, n = bound_inbox(inboxes[i], max_len, max_bytes)
      if cut > 0 then redis.call('HINCRBY', dropped_key, names[i], cut) end
    else
      n = redis.call('LLEN', inboxes[i]) - 1
    end
    lens[i] = n
    if n > 0 then busy = busy + 1 end
  end
  if busy == 0 then return 0, nil end
  local share = math.ceil(limit / busy)
  local moved = 0
  for i = 1, #inboxes do
    if lens[i] > 0 then
      local m, d, blocked
      if names[i] then
        m, d, blocked = move_inbox(stream, inboxes[i], share, own_max_element, max_events,
                                   max_chars, names[i])
        if d > 0 then redis.call('HINCRBY', dropped_key, names[i], d) end
      else
        m, d, blocked = move_inbox(stream, inboxes[i], share, max_element, max_events,
                                   max_chars, nil)
      end
      moved = moved + m
      if blocked then return moved, blocked end
    end
  end
  return moved, nil
end
