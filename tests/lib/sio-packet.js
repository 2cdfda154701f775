// Minimal Socket.IO v5 packet decoder, so tests compare packets by meaning
// (type, namespace, ack id, attachment count, JSON payload) rather than by
// exact bytes: JSON key order or whitespace may legitimately differ.
//
// Packet format: <type>[<attachments>-][<nsp>,][<ack id>][<JSON payload>]

export const SIO = {
  CONNECT: 0,
  DISCONNECT: 1,
  EVENT: 2,
  ACK: 3,
  CONNECT_ERROR: 4,
  BINARY_EVENT: 5,
  BINARY_ACK: 6,
};

/** Decodes an Engine.IO message frame ("4" + Socket.IO packet). */
export function decodeFrame(frame) {
  if (typeof frame !== "string" || frame[0] !== "4") {
    throw new Error(`expected an Engine.IO message packet carrying Socket.IO, got ${JSON.stringify(String(frame))}`);
  }
  return decodePacket(frame.slice(1));
}

export function decodePacket(str) {
  const type = Number(str[0]);
  let i = 1;
  let attachments;
  if (type === SIO.BINARY_EVENT || type === SIO.BINARY_ACK) {
    const dash = str.indexOf("-", i);
    attachments = Number(str.slice(i, dash));
    i = dash + 1;
  }
  let nsp = "/";
  if (str[i] === "/") {
    const comma = str.indexOf(",", i);
    nsp = comma === -1 ? str.slice(i) : str.slice(i, comma);
    i = comma === -1 ? str.length : comma + 1;
  }
  let id;
  const digits = /^\d+/.exec(str.slice(i));
  if (digits) {
    id = Number(digits[0]);
    i += digits[0].length;
  }
  const data = i < str.length ? JSON.parse(str.slice(i)) : undefined;
  return { type, attachments, nsp, id, data };
}

/** Fills the optional fields so a decoded packet can be deepEqual-ed. */
export function packet({ type, attachments, nsp = "/", id, data }) {
  return { type, attachments, nsp, id, data };
}

/** A binary attachment placeholder. */
export const placeholder = (num) => ({ _placeholder: true, num });
