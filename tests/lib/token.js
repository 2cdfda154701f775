// Signs JWTs the way an application backend would (HS256 with the shared JWT_SECRET), plus the
// malformed variants a hostile client might try.

import { createHmac } from "node:crypto";

export const JWT_SECRET = process.env.SWITCHBOARD_JWT_SECRET || "conformance-jwt-secret";

const b64url = (value) => Buffer.from(typeof value === "string" ? value : JSON.stringify(value)).toString("base64url");

/** A token for `claims`; `exp` defaults to one minute from now. */
export function signToken(claims, { secret = JWT_SECRET, alg = "HS256", hmac = "sha256" } = {}) {
  const header = b64url({ alg, typ: "JWT" });
  const body = b64url({ exp: Math.floor(Date.now() / 1000) + 60, ...claims });
  if (alg === "none") return `${header}.${body}.`;
  const signature = createHmac(hmac, secret).update(`${header}.${body}`).digest("base64url");
  return `${header}.${body}.${signature}`;
}
