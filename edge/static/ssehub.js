// ssehub.js — the browser helper, served by every edge at GET /ssehub.js, and
// the npm package's `ssehub/browser` (one source: clients/node/src/browser.ts;
// edge/static/ssehub.js is its build, checked identical in CI).
//
//   import { connect } from 'https://edge.example.com/ssehub.js';
//   const hub = connect({
//     url: 'https://edge.example.com',   // the edge's base URL, default: where this file came from
//                                        // (a URL ending in /sse/connect is used as it is)
//     user: userId,                      // who is signed in (default: the token's `sub`)
//     token: async () => (await fetch('/my/sse-token')).text(),   // or a token string
//     on: {
//       connected: ({ userId, connectionId, recovered }) => { if (!recovered) reloadState(); },
//       'message:new': (data, { id }) => show(data),
//     },
//   });
//   hub.close();
//
// One stream per browser profile, origin, `key` (default: the stream URL) and
// user, shared by all tabs: the tab holding the Web Lock `ssehub:<key>|<user>`
// is the leader; it holds the EventSource and rebroadcasts every event on the
// BroadcastChannel of the same name. When it closes, another tab gets the lock
// and opens the stream itself, resuming from the last id *it* delivered
// (`?lastEventId=`, because an EventSource cannot send headers on its first
// request). Every tab ignores a numbered event at or below the last id it
// delivered, so nothing is doubled at the hand-over.
//
// Tabs of different users never share: a tab knows its user before it joins,
// from the `user` option, else the `sub` claim of its token (read, not
// verified: a token() function is called once for it), else (a cookie, or a
// token that is no JWT) the userId of a stream the edge opens for the tab's
// credentials (fetched, read up to `connected`, dropped). Nothing of another
// user is ever shown: every message between tabs carries the stream's userId, a
// tab drops one that is not its user's, and a leader whose stream turns out to
// be another user's (the cookie or token() changed under it: an account
// switch) drops it, asks token() again twice, then stops with status
// 'closed' 'user_changed' (reload the page). A tab whose user cannot be learned
// holds a stream of its own.
//
// Handlers: `on[name](data, {name, id})`, data parsed from JSON, id null for
// ephemeral events. `on.connected({userId, connectionId, recovered})` runs in
// every tab for every new stream; `recovered: false` means events were missed:
// reload the app's state. A tab that joins an open stream gets `connected` too
// (recovered only if it asked for `lastEventId` and the stream is still there).
//
// Tokens go in `?token=`; with `cookie: true`, nowhere in the URL (an edge with
// SSEHUB_QUERY_TOKENS=false refuses them there): the page's backend sets the
// SSEHUB_JWT_COOKIE cookie, and token() renews it. A new one is fetched with `token()` on
// `token:expiring`, `token:expired`, `disconnected {reason: token_revoked}` and
// after a refused stream: an EventSource reports no status, so after an error
// with readyState CLOSED the stream URL is fetched once (aborted as soon as the
// headers arrive) to read it: 401 → new token and reconnect, 429
// (too_many_streams) and 403 (origin_not_allowed: the cookie from a page the
// edge does not allow) → stop, anything else → reconnect with backoff. A token()
// that throws or returns nothing stops the helper (e.g. the user logged out).
// Renewal is break-then-make: the new stream replays from the last id, so no
// numbered event is lost or doubled (an ephemeral one in flight may be lost).
// `disconnected {reason: too_many_streams}` stops too; any other reason is
// left to the EventSource, which reconnects by itself. A stopped leader keeps
// the lock, so the other tabs do not try in turn; close() and connect() again.
//
// More options: `lastEventId` (where this tab's state is from, e.g. kept across
// a reload: a leader replays from there), `withCredentials` (cross-origin
// cookies), `onStatus(state, detail)`: 'connecting' | 'open' | 'reconnecting' |
// 'follower' | 'closed' (detail: why), in every tab. The returned object has
// close(), `leader` (does this tab hold the stream) and `lastEventId`.
//
// Without Web Locks (http:// on a host other than localhost is not a secure
// context) every tab opens its own stream.
const BUILTIN = ['message', 'connected', 'disconnected', 'token:expiring', 'token:expired',
    'presence:snapshot', 'user:online', 'user:offline'];
const MAX_BACKOFF_MS = 30000;
const OTHER_USER_RETRIES = 2; // token() asked again when a stream is another user's
const NO_CHANNEL = { postMessage() { }, close() { } };
export function connect({ url, token, on = {}, key, user, lastEventId = null, onStatus = () => { }, withCredentials = false, cookie = false } = {}) {
    const streamUrl = toStreamUrl(url ?? new URL('.', import.meta.url).href);
    const names = new Set([...BUILTIN, ...Object.keys(on)]);
    let channel = NO_CHANNEL; // until this tab knows its user, and if it shares
    let expect = null; // the userId this tab's events must have
    let firstToken = null; // fetched to learn the user: the first stream's
    const stop = new AbortController();
    let lastId = toId(lastEventId); // last numbered event id this tab delivered
    const askedFrom = lastId;
    let joined = false; // this tab has seen a connected (or welcome)
    let connectedData = null; // the current stream's connected payload
    let online = null; // presence as last seen (snapshot + online/offline)
    let leader = null; // the Leader while this tab holds the lock
    let status = null;
    let statusDetail = null;
    let closed = false;
    const tabId = Math.random().toString(36).slice(2);
    function setStatus(state, detail = null, share = false) {
        if (status === state && statusDetail === detail)
            return;
        status = state;
        statusDetail = detail;
        safe(() => onStatus(state, detail));
        if (share)
            channel.postMessage({ type: 'status', state, detail });
    }
    // Whether a stream (or a message) of userId `who` is this tab's user's.
    function accept(who) {
        if (typeof who !== 'string')
            return false;
        if (expect === null)
            expect = who;
        return who === expect;
    }
    // Every event, in every tab, goes through here (the leader calls it too).
    function deliver(msg) {
        if (closed)
            return;
        const id = toId(msg.id);
        if (msg.name === 'connected') {
            lastId = msg.data?.recovered && lastId !== null && id !== null ? Math.max(lastId, id) : id;
            connectedData = msg.data;
            joined = true;
        }
        else if (id !== null) {
            if (lastId !== null && id <= lastId)
                return; // already delivered (hand-over replay)
            lastId = id;
        }
        trackPresence(msg);
        const handler = on[msg.name];
        if (handler)
            safe(() => handler(msg.data, { name: msg.name, id: msg.id }));
    }
    function trackPresence({ name: n, data }) {
        if (n === 'presence:snapshot' && Array.isArray(data?.online))
            online = new Set(data.online);
        else if (online && n === 'user:online')
            online.add(data?.userId);
        else if (online && n === 'user:offline')
            online.delete(data?.userId);
    }
    function heard({ data: msg }) {
        if (closed || !msg)
            return;
        if (msg.type === 'event') {
            if (accept(msg.user))
                deliver(msg);
        }
        else if (msg.type === 'hello') {
            for (const n of msg.names || [])
                names.add(n);
            if (leader) {
                leader.listen();
                // a tab that joins a halted leader learns why nothing comes
                if (leader.stopped)
                    channel.postMessage({ type: 'status', state: status, detail: statusDetail });
                if (connectedData) {
                    channel.postMessage({ type: 'welcome', to: msg.from, connected: connectedData, lastId,
                        online: online && [...online] });
                }
            }
        }
        else if (msg.type === 'welcome' && msg.to === tabId && !joined) {
            if (!accept(msg.connected?.userId))
                return;
            joined = true;
            const recovered = askedFrom !== null && msg.lastId !== null && askedFrom >= msg.lastId;
            if (lastId === null || (msg.lastId !== null && msg.lastId > lastId))
                lastId = msg.lastId;
            connectedData = msg.connected;
            setStatus('follower');
            safe(() => on.connected?.({ ...msg.connected, recovered }, { name: 'connected', id: String(lastId ?? '') }));
            if (msg.online) {
                online = new Set(msg.online);
                const snapshot = msg.online;
                safe(() => on['presence:snapshot']?.({ online: snapshot }, { name: 'presence:snapshot', id: null }));
            }
        }
        else if (msg.type === 'status' && !leader) {
            setStatus((msg.state === 'open' ? 'follower' : msg.state), msg.detail);
        }
    }
    const hello = () => channel.postMessage({ type: 'hello', from: tabId, names: [...names] });
    function lead() {
        leader = new Leader({
            streamUrl, token, cookie, names, withCredentials, channel, deliver, setStatus, accept,
            from: () => lastId,
        });
        if (firstToken !== null)
            leader.current = firstToken;
        firstToken = null;
        return leader.run();
    }
    // Share a stream with this user's other tabs, or hold one alone.
    function start(id) {
        if (closed)
            return;
        expect = id.expect;
        if (id.key === null || !navigator.locks) {
            lead();
            return;
        }
        const name = 'ssehub:' + (key ?? streamUrl) + '|' + id.key;
        channel = new BroadcastChannel(name);
        channel.onmessage = heard;
        setStatus('follower');
        hello();
        navigator.locks.request(name, { signal: stop.signal }, lead).catch(() => { });
    }
    // Who this tab is signed in as, when the options do not say it at once.
    async function identify() {
        let t = typeof token === 'string' ? token : null;
        if (typeof token === 'function' && !cookie) {
            t = await token();
            if (!t)
                throw new Error('no_token');
            firstToken = t;
        }
        const sub = t ? subjectOf(t) : null;
        if (sub !== null)
            return { key: sub, expect: null };
        let who = await whoIs(streamUrl, cookie ? null : t, withCredentials);
        if (who.status === 401 && typeof token === 'function') {
            t = await token(); // a cookie is set anew, or a token renewed
            if (!t)
                throw new Error('no_token');
            firstToken = t;
            who = await whoIs(streamUrl, cookie ? null : t, withCredentials);
        }
        return who.user === null ? { key: null, expect: null } : { key: who.user, expect: who.user };
    }
    const sub = typeof token === 'string' ? subjectOf(token) : null;
    if (user)
        start({ key: user, expect: user });
    else if (sub !== null)
        start({ key: sub, expect: null });
    else {
        setStatus('connecting');
        identify().then(start, (err) => {
            if (closed)
                return;
            closed = true;
            const why = err?.message === 'no_token' ? 'no_token' : 'token: ' + (err?.message || err);
            setStatus('closed', why);
        });
    }
    return {
        close() {
            if (closed)
                return;
            closed = true;
            stop.abort();
            leader?.stop();
            channel.close();
            setStatus('closed', 'closed');
        },
        get leader() { return leader !== null; },
        get lastEventId() { return lastId; },
    };
}
class Leader {
    constructor(opts) {
        Object.assign(this, opts);
        this.es = null;
        this.stopped = false;
        this.backoff = 1000;
        this.timer = undefined;
        this.listening = new Set();
        this.prevId = ''; // e.lastEventId of the previous event: ephemeral events repeat it
        this.refusals = 0; // 401s in a row
        this.current = null; // the token in use
        this.renewedAt = 0;
        this.opens = 0;
        this.warnedFor = null; // expiresAt of the last token:expiring
        this.url = '';
        this.user = null; // the userId of the current stream
        this.otherUsers = 0; // streams in a row that were another user's
        this.done = new Promise((resolve) => { this.release = resolve; });
    }
    run() {
        this.open(false);
        return this.done; // the lock is held until stop()
    }
    // close(): give the stream and the lock to another tab.
    stop() {
        this.halt();
        this.release();
    }
    // A refusal that another try would not fix: no stream, but keep the lock
    // so that the other tabs do not try in turn (until this one closes).
    halt(detail = null) {
        this.stopped = true;
        clearTimeout(this.timer);
        this.es?.close();
        this.es = null;
        if (detail)
            this.setStatus('closed', detail, true);
    }
    get renewable() {
        return typeof this.token === 'function';
    }
    // Open (or reopen) the stream; fresh: ask token() for a new token first
    // (a fixed token string is used as it is).
    async open(fresh) {
        clearTimeout(this.timer);
        this.es?.close();
        this.es = null;
        const gen = ++this.opens; // a later open() wins over one still awaiting token()
        this.setStatus('connecting', null, true);
        let t;
        try {
            if (typeof this.token !== 'function')
                t = this.token;
            else
                t = fresh || this.current === null ? await this.token() : this.current;
        }
        catch (err) {
            return this.halt('token: ' + (err?.message || err));
        }
        if (this.stopped || gen !== this.opens)
            return;
        if (!t)
            return this.halt('no_token');
        this.current = t;
        const u = new URL(this.streamUrl);
        if (!this.cookie)
            u.searchParams.set('token', t);
        const from = this.from();
        if (from !== null)
            u.searchParams.set('lastEventId', String(from));
        const es = new EventSource(u.href, { withCredentials: this.withCredentials });
        this.es = es;
        this.url = u.href;
        this.prevId = '';
        this.listening = new Set();
        this.listen();
        es.onerror = () => { if (this.es === es)
            this.failed(es); };
    }
    // Listen to every known event name (followers announce theirs in hello).
    listen() {
        const es = this.es;
        if (!es)
            return;
        for (const n of this.names) {
            if (this.listening.has(n))
                continue;
            this.listening.add(n);
            es.addEventListener(n, (e) => { if (this.es === es)
                this.event(n, e); });
        }
    }
    event(n, e) {
        // lastEventId carries over to events without an id: line, so an unchanged
        // value means an ephemeral event (connected always has its own id).
        const id = n === 'connected' || e.lastEventId !== this.prevId ? e.lastEventId || null : null;
        this.prevId = e.lastEventId;
        const msg = { type: 'event', name: n, data: parse(e.data), id, user: this.user };
        if (n === 'connected') {
            const who = msg.data?.userId;
            if (typeof who !== 'string' || !this.accept(who))
                return this.otherUser();
            this.user = msg.user = who;
            this.otherUsers = 0;
            this.refusals = 0;
            this.backoff = 1000;
            this.setStatus('open', null, true);
        }
        this.deliver(msg);
        this.channel.postMessage(msg);
        if (n === 'token:expiring') {
            // the same expiry again: token() gave back the token we had, so wait
            // for token:expired rather than reconnect in a loop
            const at = msg.data?.expiresAt;
            if (at === undefined || at !== this.warnedFor)
                this.renew(null);
            this.warnedFor = at;
        }
        else if (n === 'token:expired') {
            this.renew('token_expired');
        }
        else if (n === 'disconnected') {
            const reason = msg.data?.reason;
            if (reason === 'token_revoked')
                this.renew(reason);
            else if (reason === 'too_many_streams')
                this.halt(reason);
            // any other reason: EventSource reconnects by itself with its token
        }
    }
    // The stream is another user's than this tab's (the credentials changed under
    // it): nothing of it is shown; token() is asked again, then the tab stops.
    otherUser() {
        this.es?.close();
        this.es = null;
        if (this.renewable && ++this.otherUsers <= OTHER_USER_RETRIES)
            this.renew(null);
        else
            this.halt('user_changed');
    }
    // Break-then-make: the new stream resumes from our last id, so nothing is
    // lost or doubled; at most one renewal a second (a token() that keeps
    // returning short-lived tokens must not spin).
    renew(reason) {
        if (!this.renewable) { // a fixed token: nothing to renew it with
            if (reason)
                this.halt(reason);
            return;
        }
        const wait = this.renewedAt + 1000 - Date.now();
        this.renewedAt = Math.max(Date.now(), this.renewedAt + 1000);
        if (wait <= 0)
            this.open(true);
        else {
            clearTimeout(this.timer);
            this.timer = setTimeout(() => this.open(true), wait);
        }
    }
    failed(es) {
        if (es.readyState === EventSource.CONNECTING) {
            this.setStatus('reconnecting', null, true); // the browser retries by itself
            return;
        }
        es.close();
        this.es = null;
        this.setStatus('reconnecting', null, true);
        const gen = this.opens;
        this.probe().then(({ status, error }) => {
            if (this.stopped || gen !== this.opens)
                return; // reopened meanwhile
            if (status === 401) {
                // a new token at once, then after a pause (a token minted in the
                // second of a revocation is still refused), then give up
                if (!this.renewable || ++this.refusals > 3)
                    return this.halt(error || 'unauthorized');
                return this.refusals === 1 ? void this.open(true) : this.later(true);
            }
            if (status === 429)
                return this.halt(error || 'too_many_streams');
            if (status === 403)
                return this.halt(error || 'forbidden');
            this.later(false);
        });
    }
    // The stream URL once more, to learn why the EventSource was refused.
    async probe() {
        const ctl = new AbortController();
        const timer = setTimeout(() => ctl.abort(), 10000);
        try {
            const res = await fetch(this.url, {
                signal: ctl.signal, cache: 'no-store',
                credentials: this.withCredentials ? 'include' : 'same-origin',
            });
            let error = null;
            if (res.status !== 200) {
                try {
                    error = (await res.json()).error ?? null;
                }
                catch { /* not JSON */ }
            }
            return { status: res.status, error };
        }
        catch {
            return { status: 0, error: null };
        }
        finally {
            clearTimeout(timer);
            ctl.abort(); // a 200 is a live stream: do not keep it open
        }
    }
    later(fresh) {
        const delay = this.backoff * (0.5 + Math.random());
        this.backoff = Math.min(this.backoff * 2, MAX_BACKOFF_MS);
        this.timer = setTimeout(() => this.open(fresh), delay);
    }
}
// The `sub` claim of a JWT, read without checking anything (only to tell
// users apart: the edge checks the token); null when it has none.
function subjectOf(token) {
    try {
        const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
        const bytes = Uint8Array.from(atob(part), (c) => c.charCodeAt(0));
        const sub = JSON.parse(new TextDecoder().decode(bytes))?.sub;
        return typeof sub === 'string' && sub ? sub : null;
    }
    catch {
        return null;
    }
}
// Whose are these credentials: a stream opened for them (no lastEventId: no
// replay), read up to its `connected`, then dropped.
async function whoIs(streamUrl, token, withCredentials) {
    const u = new URL(streamUrl);
    if (token)
        u.searchParams.set('token', token);
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), 10000);
    try {
        const res = await fetch(u.href, {
            signal: ctl.signal, cache: 'no-store',
            credentials: withCredentials ? 'include' : 'same-origin',
        });
        if (res.status !== 200 || !res.body)
            return { status: res.status, user: null };
        const reader = res.body.getReader();
        const text = new TextDecoder();
        let seen = '';
        while (seen.length < 65536) {
            const { value, done } = await reader.read();
            if (done)
                break;
            seen += text.decode(value, { stream: true });
            const found = /(?:^|\n)event: connected\ndata: ([^\n]*)\n/.exec(seen);
            if (found) {
                const who = parse(found[1])?.userId;
                return { status: 200, user: typeof who === 'string' ? who : null };
            }
        }
        return { status: 200, user: null };
    }
    catch {
        return { status: 0, user: null };
    }
    finally {
        clearTimeout(timer);
        ctl.abort();
    }
}
function toStreamUrl(base) {
    const u = new URL(base, location.href);
    if (!u.pathname.endsWith('/sse/connect'))
        u.pathname = u.pathname.replace(/\/?$/, '/sse/connect');
    return u.href;
}
function toId(v) {
    if (v === null || v === undefined || v === '')
        return null;
    const n = Number(v);
    return Number.isSafeInteger(n) && n >= 0 ? n : null;
}
function parse(text) {
    try {
        return JSON.parse(text);
    }
    catch {
        return text;
    }
}
function safe(fn) {
    try {
        fn();
    }
    catch (err) {
        setTimeout(() => { throw err; });
    } // report, keep going
}
