// Evaluated in each test tab (a page of the edge's origin): starts ssehub.js
// and records what the app would see. Tokens are HS256 JWTs minted here with
// WebCrypto, so token() always returns a fresh one, as an app's backend would.
(() => {
  const enc = new TextEncoder();
  const b64u = (bytes) => btoa(String.fromCharCode(...new Uint8Array(bytes)))
    .replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
  const part = (obj) => b64u(enc.encode(JSON.stringify(obj)));

  async function mint(secret, sub, ttl) {
    const now = Math.floor(Date.now() / 1000);
    const signed = part({ alg: 'HS256', typ: 'JWT' }) + '.' + part({ sub, iat: now, exp: now + ttl });
    const key = await crypto.subtle.importKey(
      'raw', enc.encode(secret), { name: 'HMAC', hash: 'SHA-256' }, false, ['sign']);
    return signed + '.' + b64u(await crypto.subtle.sign('HMAC', key, enc.encode(signed)));
  }

  const h = {
    log: [],          // [id, data.n] of every test event delivered, in order
    to: [],           // data.to of every test event delivered: whose it was
    as: null,         // whose tokens token() signs (a test switches accounts with it)
    connected: [],    // the connected payloads delivered
    statuses: [],
    tokenCalls: 0,
    expiring: 0,
    leaderAt: null,   // Date.now() when this tab became the leader
    waiters: [],
    hub: null,

    bump() {
      if (h.hub && h.hub.leader && h.leaderAt === null) h.leaderAt = Date.now();
      h.waiters = h.waiters.filter((w) => !(w.pred() && (w.resolve(true), true)));
    },

    // The page's token cookie (an app's backend sets it at sign-in).
    async signIn(secret, cookie, ttl) {
      document.cookie = `${cookie}=${await mint(secret, h.as, ttl)}; path=/; SameSite=Strict`;
    },

    // ttls: the lifetime of the first tokens, one per token() call (then ttl);
    // a lifetime of null makes that token() call throw. options: connect()'s,
    // over the defaults (null: left out); cookie: the token cookie's name, set
    // by token() (and by signing in first), for connect({cookie: true}).
    async start({ user, secret, ttl, event, ttls = [], options = {}, cookie = null }) {
      const { connect } = await import('/ssehub.js');
      h.as = user;
      if (cookie) await h.signIn(secret, cookie, ttl);
      const opts = {
        url: location.origin,
        key: user,
        user,
        cookie: Boolean(cookie),
        token: async () => {
          const life = h.tokenCalls < ttls.length ? ttls[h.tokenCalls] : ttl;
          h.tokenCalls++;
          if (life === null) throw new Error('signed out');
          const t = await mint(secret, h.as, life);
          if (cookie) document.cookie = `${cookie}=${t}; path=/; SameSite=Strict`;
          return t;
        },
        on: {
          connected: (d) => { h.connected.push(d); h.bump(); },
          [event]: (d, meta) => { h.log.push([Number(meta.id), d.n]); h.to.push(d.to); h.bump(); },
          'token:expiring': () => { h.expiring++; h.bump(); },
        },
        onStatus: (s, detail) => { h.statuses.push(detail ? s + ':' + detail : s); h.bump(); },
      };
      for (const [k, v] of Object.entries(options)) {
        if (v === null) delete opts[k];
        else opts[k] = v;
      }
      h.hub = connect(opts);
      h.bump();
    },

    // Resolves once pred() holds (checked whenever something is delivered).
    until(pred, ms) {
      if (pred()) return Promise.resolve(true);
      return new Promise((resolve, reject) => {
        const w = { pred, resolve };
        h.waiters.push(w);
        setTimeout(() => {
          h.waiters = h.waiters.filter((x) => x !== w);
          reject(new Error('timed out: ' + JSON.stringify(h.state())));
        }, ms);
      });
    },

    state() {
      return { log: h.log, to: h.to, connected: h.connected, statuses: h.statuses,
               tokenCalls: h.tokenCalls, expiring: h.expiring,
               leader: !!(h.hub && h.hub.leader), leaderAt: h.leaderAt };
    },
  };
  window.harness = h;
})();
