-- Shared by fenced_read and xadd_many. move_inbox(stream, inbox, limit, max_element,
-- max_events, max_chars) moves up to `limit` inbox elements (element 1, the head, stays) into
-- the stream, in order, then trims them with one LTRIM. Flat JSON objects of at most
-- max_element bytes are joined into bundles of up to max_events events and max_chars
-- characters; any other element gets an entry of its own. Returns the elements moved and,
-- when the stream refused an entry, why.
-- The chain (tamper evidence for inbox cuts): every entry moved carries `tail`, the SHA-1 of
-- its last element; the first entry of a move also carries `head`, the SHA-1 of the head
-- element before the move (the previous move's last element, or init's head). A cut of
-- elements not yet moved (an LTRIM) makes a later move's `head` differ from the `tail` before
-- it, which `eventfleet verify` reports.
local function move_inbox(stream, inbox, limit, max_element, max_events, max_chars)
  local items = redis.call('LRANGE', inbox, 0, limit)
  local head = table.remove(items, 1)
  local moved, blocked = 0, nil
  local bundle, size = {}, 0
  local function add(text, n, last)
    local ok, id
    if moved == 0 then
      ok, id = pcall(redis.call, 'XADD', stream, 'NOMKSTREAM', '*', 'event', text,
                     'via', 'inbox', 'tail', redis.sha1hex(last), 'head', redis.sha1hex(head))
    else
      ok, id = pcall(redis.call, 'XADD', stream, 'NOMKSTREAM', '*', 'event', text,
                     'via', 'inbox', 'tail', redis.sha1hex(last))
    end
    if not ok or not id then
      blocked = ok and 'the stream does not exist' or tostring(id.err or id)
      return false
    end
    moved = moved + n
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
    elseif not flush() or not add(it, 1, it) then
      break
    end
  end
  if not blocked then flush() end
  if moved > 0 then redis.call('LTRIM', inbox, moved, -1) end
  return moved, blocked
end
