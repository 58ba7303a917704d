const REDACTED = "***";

/**
 * `url` with the secret of its user part replaced: "nats://app:s3cret@nats:4222" → "nats://app:***@nats:4222",
 * and a token given as the whole user part ("nats://s3cret@nats:4222") → "nats://***@nats:4222".
 */
export function redactNatsUrl(url: string): string {
  return url.replace(/^([a-z]+:\/\/)([^@/\s]*)@/i, (_match, scheme: string, userInfo: string) => {
    const colon = userInfo.indexOf(":");
    return colon < 0 ? `${scheme}${REDACTED}@` : `${scheme}${userInfo.slice(0, colon)}:${REDACTED}@`;
  });
}

/** The secrets written in NATS URLs (passwords, and tokens given as the user part), raw and URL-decoded. */
export function natsUrlSecrets(servers: readonly string[]): string[] {
  const secrets = new Set<string>();
  for (const server of servers) {
    const userInfo = /^[a-z]+:\/\/([^@/\s]*)@/i.exec(server)?.[1];
    if (userInfo === undefined || userInfo === "") continue;
    const colon = userInfo.indexOf(":");
    const secret = colon < 0 ? userInfo : userInfo.slice(colon + 1);
    if (secret === "") continue;
    secrets.add(secret);
    try {
      secrets.add(decodeURIComponent(secret));
    } catch {
      // Not percent-encoded text: the raw form is all there is.
    }
  }
  return [...secrets];
}

/**
 * `text` (a log line) with every occurrence of each secret replaced by "***", also where JSON escaping
 * changed how the secret is written. Secrets of fewer than 4 characters are skipped: replacing them would
 * garble every line and hide nothing.
 */
export function redactSecrets(text: string, secrets: readonly string[]): string {
  let out = text;
  for (const secret of secrets) {
    if (secret.length < 4) continue;
    for (const form of new Set([secret, JSON.stringify(secret).slice(1, -1)])) out = out.split(form).join(REDACTED);
  }
  return out;
}
