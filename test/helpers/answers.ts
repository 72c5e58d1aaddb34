// The plugin's error answers as a client receives them (the JSON body), for the tests that
// check an answer whole.
export interface ErrorAnswer { statusCode: number, code: string, error: string, message: string }

function answer (statusCode: number, code: string, error: string, message: string): ErrorAnswer {
  return { statusCode, code, error, message }
}

export const UPSTREAM_ERROR = answer(502, 'FST_ASYNC_ROUTE_UPSTREAM_ERROR', 'Bad Gateway', 'The upstream request failed')
export const UPSTREAM_TIMEOUT = answer(504, 'FST_ASYNC_ROUTE_UPSTREAM_TIMEOUT', 'Gateway Timeout', 'The upstream request timed out')
export const BAD_UPSTREAM_REQUEST = answer(500, 'FST_ASYNC_ROUTE_BAD_UPSTREAM_REQUEST', 'Internal Server Error', 'The upstream request is invalid')
export const ORIGIN_DENIED = answer(500, 'FST_ASYNC_ROUTE_ORIGIN_DENIED', 'Internal Server Error', 'The upstream origin is not allowed')
export const CLOSING = answer(503, 'FST_ASYNC_ROUTE_CLOSING', 'Service Unavailable', 'The server is closing')
export const OVERLOADED = answer(503, 'FST_ASYNC_ROUTE_OVERLOADED', 'Service Unavailable', 'Too many pending requests; retry shortly')
