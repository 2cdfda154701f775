// The chat example: one socket.io-client connection per chat channel (chats/<id>), selected by the
// `path` option. Messages and "typing" notices are client events the channel relays to everyone in
// it; a backend can post into the same channel with POST /emit (event "chat message"). Who is
// here comes from presence: the member list (`switchboard:members`) when connected, then each
// join and leave (`switchboard:presence`); each page declares its nickname as its `info`.
(() => {
  const $ = (id) => document.getElementById(id);
  const messages = $("messages");
  const typingLine = $("typing");
  const status = $("status");
  const membersLine = $("members");
  const saved = new URLSearchParams(location.hash.slice(1));

  $("nick").value = saved.get("nick") || localStorage.getItem("switchboard-nick") || "";
  $("channel").value = saved.get("channel") || "1";

  let socket = null;
  const typists = new Map(); // socket id → { nick, timer }
  const members = new Map(); // member id → nickname

  function renderMembers() {
    // One name once, even for a page just reloaded whose old connection is still in its grace.
    const names = [...new Set(members.values())].sort((a, b) => a.localeCompare(b));
    membersLine.textContent = names.length === 0 ? "" : `Here: ${names.join(", ")}`;
  }

  const nickOf = (member) => String(member.info?.nick || "someone");

  function append(className, nick, text) {
    const item = document.createElement("li");
    item.className = className;
    if (nick) {
      const who = document.createElement("span");
      who.className = "nick";
      who.textContent = nick;
      item.appendChild(who);
    }
    item.appendChild(document.createTextNode(text));
    messages.appendChild(item);
    item.scrollIntoView({ block: "end" });
  }

  function renderTyping() {
    const names = [...typists.values()].map((t) => t.nick);
    typingLine.textContent =
      names.length === 0 ? "" : names.length === 1 ? `${names[0]} is typing…` : `${names.join(", ")} are typing…`;
  }

  function join(channel, nick) {
    if (socket) socket.disconnect();
    messages.replaceChildren();
    typists.clear();
    renderTyping();
    members.clear();
    renderMembers();
    location.hash = new URLSearchParams({ channel, nick }).toString();
    localStorage.setItem("switchboard-nick", nick);

    socket = io(location.origin, { path: `/socket.io/chats/${channel}`, auth: { info: { nick } } });
    socket.on("connect", () => {
      status.textContent = `online in chats/${channel}`;
      status.dataset.state = "online";
      if (!socket.recovered) append("system", "", `You joined chats/${channel} as ${nick}.`);
      socket.emit("switchboard:members", { limit: 100 }, (list) => {
        members.clear();
        for (const member of list?.members ?? []) members.set(member.id, nickOf(member));
        renderMembers();
      });
    });
    socket.on("switchboard:presence", ({ changes = [] } = {}) => {
      for (const { type, member } of changes) {
        if (type === "join") members.set(member.id, nickOf(member));
        else members.delete(member.id);
      }
      renderMembers();
    });
    socket.on("disconnect", () => {
      status.textContent = "offline";
      status.dataset.state = "offline";
    });
    socket.on("connect_error", (err) => append("system", "", `Cannot connect: ${err.message}`));
    socket.on("chat message", (message) => {
      // Clients send {nick, text}; a backend may send a plain string.
      if (message && typeof message === "object") {
        append(message.from === "server" ? "server" : "", message.nick || "", String(message.text ?? ""));
        const typist = [...typists.entries()].find(([, t]) => t.nick === message.nick);
        if (typist) {
          clearTimeout(typist[1].timer);
          typists.delete(typist[0]);
          renderTyping();
        }
      } else {
        append("server", "", String(message));
      }
    });
    socket.on("typing", ({ id, nick: who } = {}) => {
      if (!id || id === socket.id) return;
      clearTimeout(typists.get(id)?.timer);
      typists.set(id, { nick: String(who || "someone"), timer: setTimeout(() => (typists.delete(id), renderTyping()), 3000) });
      renderTyping();
    });
  }

  $("join").addEventListener("submit", (event) => {
    event.preventDefault();
    join($("channel").value.trim(), $("nick").value.trim());
    $("text").focus();
  });

  let lastTyping = 0;
  $("text").addEventListener("input", () => {
    if (!socket?.connected || Date.now() - lastTyping < 1000) return;
    lastTyping = Date.now();
    socket.emit("typing", { id: socket.id, nick: $("nick").value.trim() });
  });

  $("send").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = $("text").value.trim();
    if (!text || !socket?.connected) return;
    socket.emit("chat message", { nick: $("nick").value.trim(), text });
    $("text").value = "";
    lastTyping = 0;
  });

  if ($("nick").value && $("channel").value) join($("channel").value, $("nick").value);
})();
