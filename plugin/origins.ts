// The `allowedOrigins` check, made before any connection is opened.

/** True when `url` parses and its origin is one of `allowed` (already normalised). */
export function originAllowed (allowed: ReadonlySet<string>, url: string | URL): boolean {
  try {
    return allowed.has(new URL(url).origin)
  } catch {
    return false
  }
}
