package backend

// EventSocketBuffer is eventSocketBuffer, for tests that overrun it.
const EventSocketBuffer = eventSocketBuffer
