// The page's side of the long poll (Tornado's chat.js without jQuery): one request open at a
// time, `GET /a/message/updates?cursor=<last id seen>`; the server answers it when a newer
// message exists, or with an empty list after a while; either way, poll again. On an error,
// wait (longer each time, at most 30 s) and poll again.
'use strict'

const inbox = document.getElementById('inbox')
const status = document.getElementById('status')
const form = document.getElementById('compose')
const input = document.getElementById('body')

let cursor = 0
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

function setStatus (text, kind) {
  status.textContent = text
  status.className = `status ${kind}`
}

function show (message) {
  if (message.id <= cursor) return // already shown
  cursor = message.id
  const item = document.createElement('p')
  item.className = 'message'
  item.dataset.id = String(message.id)
  const time = document.createElement('time')
  time.dateTime = new Date(message.at).toISOString()
  time.textContent = new Date(message.at).toLocaleTimeString()
  item.append(time, message.body) // text, never HTML
  inbox.append(item)
  inbox.scrollTop = inbox.scrollHeight
}

async function poll () {
  let errorSleep = 500
  for (;;) {
    try {
      const response = await fetch(`/a/message/updates?cursor=${cursor}`, { cache: 'no-store' })
      if (!response.ok) throw new Error(`HTTP ${response.status}`)
      const { messages } = await response.json()
      setStatus('live', 'live')
      for (const message of messages) show(message)
      errorSleep = 500
    } catch (error) {
      setStatus(`offline (${error.message}), retrying…`, 'offline')
      await sleep(errorSleep)
      errorSleep = Math.min(errorSleep * 2, 30_000)
    }
  }
}

form.addEventListener('submit', async (event) => {
  event.preventDefault()
  const body = input.value.trim()
  if (body === '') return
  input.value = ''
  try {
    const response = await fetch('/a/message/new', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ body })
    })
    if (!response.ok) throw new Error(`HTTP ${response.status}`)
  } catch (error) {
    input.value = body // give it back to retry
    setStatus(`not sent (${error.message})`, 'offline')
  }
})

setStatus('live', 'live')
poll()
