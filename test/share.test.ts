// Read-only share links (issue 6, item 4) on a real `jupyter lab` with the repository's config and
// the lathe_jupyter server extension: `lathe rooms share` mints the link; opening it signs the
// browser in as a viewer (cookie), who can read the shared notebook, follow it live over the
// collaboration websocket and reach the run rooms, but cannot write, execute, or edit the shared
// document. Wrong, malformed and expired tokens are refused and logged.
import { randomUUID } from 'node:crypto';
import { mkdir, readFile, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadSecret } from '../src/rooms/datadir.js';
import { mintToken } from '../src/rooms/token.js';
import {
  docSession,
  hasCollaboration,
  NotebookClient,
  notebook,
  startLab,
  upgradeStatus,
  type Lab,
} from './collab-jupyter.js';
import { lathe } from './helpers.js';

/** The `name=value` pairs of a response's Set-Cookie headers, as a Cookie header. */
function cookieOf(res: Response): string {
  return res.headers
    .getSetCookie()
    .map((c) => c.split(';')[0]!)
    .filter((c) => !c.endsWith('=""') && !c.endsWith('='))
    .join('; ');
}

/** The headers a browser sends after opening a page: its cookies, and the XSRF header JupyterLab copies from `_xsrf`. */
function browserHeaders(res: Response): Record<string, string> {
  const cookie = cookieOf(res);
  const xsrf = /(?:^|; )_xsrf=([^;]+)/.exec(cookie)?.[1];
  return xsrf ? { Cookie: cookie, 'X-XSRFToken': xsrf } : { Cookie: cookie };
}

describe.skipIf(!hasCollaboration)('read-only share links (lathe_jupyter)', () => {
  let lab: Lab;
  let link: string;
  let shareToken: string;
  let viewer: Record<string, string>; // the viewer's Cookie and X-XSRFToken headers
  let opened: { status: number; html: string };
  const clients: NotebookClient[] = [];
  const original = notebook('x = 1', 'y = 2');
  // Secrets behind symlinks in a shared folder (issue 18, item 1): one elsewhere in Jupyter's root, one outside it.
  const privateSecret = `private-${randomUUID()}`;
  const notebookSecret = `private_nb_${randomUUID().replace(/-/g, '')}`;
  const outsideSecret = `outside-${randomUUID()}`;

  beforeAll(async () => {
    lab = await startLab(
      {
        'shared.ipynb': original,
        'private.ipynb': notebook('secret = 42'),
        'sub/other.ipynb': notebook('z = 0'),
        'notebooks/shared/a.ipynb': notebook('a = 1'),
        'private/secret.txt': privateSecret,
        'private/secret.ipynb': notebook(`${notebookSecret} = 1`),
      },
      // DEBUG: successful requests are logged too, so the token-masking test sees every kind of line.
      ['--YDocExtension.document_save_delay=0.2', '--Application.log_level=DEBUG'],
    );
    // The layout of the report: links out of notebooks/shared/ to root/private, to a
    // folder outside Jupyter's root, to /etc; and one link that stays inside the folder.
    const outside = join(lab.root, '..', 'outside');
    await mkdir(outside, { recursive: true });
    await writeFile(join(outside, 'secret.txt'), outsideSecret);
    const shared = join(lab.root, 'notebooks', 'shared');
    await symlink('../../private', join(shared, 'escape'));
    await symlink('/etc', join(shared, 'etc'));
    await symlink('../../../outside', join(shared, 'out'));
    await symlink('../../private/secret.txt', join(shared, 'leak.txt'));
    await symlink('../../private/secret.ipynb', join(shared, 'leak.ipynb'));
    await symlink('a.ipynb', join(shared, 'alias.ipynb'));
    const r = lathe(
      [
        'rooms',
        'share',
        'shared.ipynb',
        '--base-url',
        lab.base,
        '--ttl',
        '1h',
        '--name',
        'Vic',
        '--data-dir',
        lab.roomsDir,
        '--json',
      ],
      { env: { LATHE_ROOMS_SECRET: '' } },
    );
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const out = JSON.parse(r.stdout) as { url: string; token: string; scope: string; expires: string };
    expect(out.scope).toBe('notebook:shared.ipynb');
    link = out.url;
    shareToken = out.token;
    // Open the link as a browser would; later tests reuse the viewer's cookie.
    const page = await fetch(link, { redirect: 'manual' });
    opened = { status: page.status, html: await page.text() };
    viewer = browserHeaders(page);
  });

  afterAll(async () => {
    for (const c of clients) c.close();
    await lab?.stop();
  });

  it('opens JupyterLab as a viewer and keeps the viewer in a cookie', async () => {
    expect(link).toBe(`${lab.base}lab/tree/shared.ipynb?lathe_share=${shareToken}`);
    expect(opened.status).toBe(200);
    const html = opened.html;
    expect(html).toContain('jupyter-config-data');
    // JupyterLab's page config carries the server's token; a viewer's page must not.
    expect(html).toContain('"token": ""');
    expect(html).not.toContain(lab.token);
    expect(viewer.Cookie).toMatch(/^username-127-0-0-1-\d+=/);
    expect(viewer['X-XSRFToken']).toBeTruthy();

    const me = await fetch(`${lab.base}api/me`, { headers: viewer });
    expect(me.status).toBe(200);
    const body = (await me.json()) as { identity: Record<string, unknown> };
    expect(body.identity).toMatchObject({
      display_name: 'Vic (view only)',
      lathe_role: 'viewer',
      lathe_scope: 'notebook:shared.ipynb',
    });
    expect(JSON.stringify(body)).not.toContain(shareToken.split('.')[2]!); // the token is not echoed

    // The shared notebook reads, marked not writable (JupyterLab shows its read-only indicator).
    const nb = await fetch(`${lab.base}api/contents/shared.ipynb`, { headers: viewer });
    expect(nb.status).toBe(200);
    const model = (await nb.json()) as { writable: boolean; content: { cells: { source: string }[] } };
    expect(model.writable).toBe(false);
    expect(model.content.cells.map((c) => c.source)).toEqual(['x = 1', 'y = 2']);
    // Lists and specs the JupyterLab page polls are readable.
    for (const p of ['api/sessions', 'api/kernels', 'api/kernelspecs', 'lab/api/settings']) {
      expect((await fetch(`${lab.base}${p}`, { headers: viewer })).status, p).toBe(200);
    }
  });

  it('never hands the server token to a viewer in a page', async () => {
    // Every page Jupyter renders from a template: the lab shell, its 404 page, the file viewer.
    for (const p of ['lab', 'lab/tree/shared.ipynb', 'lab/workspaces/w1', 'lab/no-such-page', 'view/shared.ipynb']) {
      const owner = await fetch(`${lab.base}${p}`, { headers: lab.auth });
      const ownerHtml = await owner.text();
      if (p.startsWith('lab')) expect(ownerHtml, p).toContain(lab.token); // the owner's lab pages do carry it
      const seen = await fetch(`${lab.base}${p}`, { headers: viewer });
      expect(seen.status, p).toBe(owner.status);
      expect(await seen.text(), p).not.toContain(lab.token);
    }
  });

  it("keeps the viewer inside the link's scope", async () => {
    for (const p of [
      'api/contents/private.ipynb',
      'api/contents/sub/other.ipynb',
      'api/contents/sub',
      'files/private.ipynb',
      'view/private.ipynb',
      'nbconvert/html/private.ipynb',
    ]) {
      const res = await fetch(`${lab.base}${p}`, { headers: viewer, redirect: 'manual' });
      expect(res.status, p).toBe(403);
    }
    const res = await fetch(`${lab.base}api/contents/private.ipynb`, { headers: viewer });
    expect(((await res.json()) as { message: string }).message).toMatch(
      /private\.ipynb is outside this share link \(notebook:shared\.ipynb\)/,
    );
    // The folder holding the shared notebook lists it, and only it (the file browser's view).
    const root = await fetch(`${lab.base}api/contents?content=1`, { headers: viewer });
    expect(root.status).toBe(200);
    const listing = (await root.json()) as { content: { path: string; writable: boolean }[] };
    expect(listing.content.map((m) => [m.path, m.writable])).toEqual([['shared.ipynb', false]]);
    const ownerListing = (await (await fetch(`${lab.base}api/contents?content=1`, { headers: lab.auth })).json()) as {
      content: { path: string }[];
    };
    expect(ownerListing.content.map((m) => m.path).sort()).toEqual([
      'notebooks',
      'private',
      'private.ipynb',
      'shared.ipynb',
      'sub',
    ]);
  });

  it('keeps a folder link inside its folder', async () => {
    const token = mintToken(loadSecret({ dataDir: lab.roomsDir }).secret, { room: 'notebook:sub/*', role: 'read' });
    const page = await fetch(`${lab.base}lab/tree/sub?lathe_share=${token}`, { redirect: 'manual' });
    expect(page.status).toBe(200);
    const folder = browserHeaders(page);
    expect((await fetch(`${lab.base}api/contents/sub/other.ipynb`, { headers: folder })).status).toBe(200);
    const listing = (await (await fetch(`${lab.base}api/contents/sub`, { headers: folder })).json()) as {
      content: { path: string }[];
    };
    expect(listing.content.map((m) => m.path)).toEqual(['sub/other.ipynb']);
    // `..` inside the path: Jupyter resolves it within its root (the owner gets private.ipynb), so
    // a prefix scope must refuse it. (%2f keeps fetch from normalizing the dots away.)
    const sneaky = 'api/contents/sub/..%2fprivate.ipynb';
    const owner = await fetch(`${lab.base}${sneaky}`, { headers: lab.auth });
    expect(owner.status).toBe(200);
    expect(((await owner.json()) as { name: string }).name).toBe('private.ipynb');
    expect((await fetch(`${lab.base}${sneaky}`, { headers: folder })).status).toBe(403);
    expect((await fetch(`${lab.base}api/contents/shared.ipynb`, { headers: folder })).status).toBe(403);
  });

  it('keeps a folder link inside its folder when the folder holds symlinks (issue 18, item 1)', async () => {
    const r = lathe(
      ['rooms', 'share', 'notebooks/shared/*', '--base-url', lab.base, '--data-dir', lab.roomsDir, '--json'],
      { env: { LATHE_ROOMS_SECRET: '' } },
    );
    expect(r.status).toBe(0);
    const { url } = JSON.parse(r.stdout) as { url: string };
    const page = await fetch(url, { redirect: 'manual' });
    expect(page.status).toBe(200);
    // With the Referer the page sends: Jupyter's /files/ takes it in place of an XSRF header.
    const folder = { ...browserHeaders(page), Referer: url };
    const escapes: [string, string][] = [
      ['notebooks/shared/escape/secret.txt', privateSecret],
      ['notebooks/shared/leak.txt', privateSecret],
      ['notebooks/shared/leak.ipynb', notebookSecret],
      ['notebooks/shared/out/secret.txt', outsideSecret],
      ['notebooks/shared/etc/passwd', 'root:x:0:0:'],
    ];
    for (const [p, secret] of escapes) {
      // The links do lead to the secrets: the owner reads them through the same paths.
      const owner = await fetch(`${lab.base}api/contents/${p}`, { headers: lab.auth });
      expect(owner.status, p).toBe(200);
      expect(await owner.text(), p).toContain(secret);
      for (const route of [
        `api/contents/${p}`,
        `api/contents/${p}?type=file&format=text&content=1`,
        `api/contents/${p}/checkpoints`,
        `files/${p}`,
        `files/${p}?download=1`,
        `view/${p}`,
        `nbconvert/html/${p}`,
        `nbconvert/script/${p}?download=true`,
      ]) {
        const res = await fetch(`${lab.base}${route}`, { headers: folder, redirect: 'manual' });
        const body = await res.text();
        expect(res.status, route).toBe(403);
        expect(body, route).not.toContain(secret);
      }
    }
    // The linked folders themselves: their listings would name what lies behind them.
    for (const p of ['notebooks/shared/escape', 'notebooks/shared/etc', 'notebooks/shared/out']) {
      expect((await fetch(`${lab.base}api/contents/${p}`, { headers: lab.auth })).status, p).toBe(200);
      const res = await fetch(`${lab.base}api/contents/${p}?content=1`, { headers: folder });
      expect(res.status, p).toBe(403);
      expect(await res.text(), p).not.toMatch(/secret\.(txt|ipynb)|passwd/);
    }
    // The folder lists only what really lies inside it: the escaping links are not shown.
    const owner = (await (
      await fetch(`${lab.base}api/contents/notebooks/shared?content=1`, { headers: lab.auth })
    ).json()) as { content: { name: string }[] };
    expect(owner.content.map((m) => m.name).sort()).toEqual([
      'a.ipynb',
      'alias.ipynb',
      'escape',
      'etc',
      'leak.ipynb',
      'leak.txt',
      'out',
    ]);
    const listing = await fetch(`${lab.base}api/contents/notebooks/shared?content=1`, { headers: folder });
    expect(listing.status).toBe(200);
    const listed = (await listing.json()) as { content: { name: string; writable: boolean }[] };
    expect(listed.content.map((m) => [m.name, m.writable]).sort()).toEqual([
      ['a.ipynb', false],
      ['alias.ipynb', false],
    ]);
    const above = (await (await fetch(`${lab.base}api/contents/notebooks?content=1`, { headers: folder })).json()) as {
      content: { path: string }[];
    };
    expect(above.content.map((m) => m.path)).toEqual(['notebooks/shared']);
    // A link that stays inside the folder still reads.
    const alias = await fetch(`${lab.base}api/contents/notebooks/shared/alias.ipynb`, { headers: folder });
    expect(alias.status).toBe(200);
    expect(JSON.stringify(await alias.json())).toContain('a = 1');
    expect((await fetch(`${lab.base}files/notebooks/shared/a.ipynb`, { headers: folder })).status).toBe(200);

    // Collaboration: no session and no document room behind an escaping link; in scope, both.
    expect((await docSession(lab, 'notebooks/shared/a.ipynb', { headers: folder })).session).toBeDefined();
    expect((await docSession(lab, 'notebooks/shared/leak.ipynb', { headers: folder })).status).toBe(403);
    const leak = await docSession(lab, 'notebooks/shared/leak.ipynb');
    expect(leak.session, leak.body).toBeDefined();
    const ws = lab.base.replace(/^http/, 'ws');
    const room = `${ws}api/collaboration/room/json:notebook:${leak.session!.fileId}?sessionId=${leak.session!.sessionId}`;
    expect(await upgradeStatus(room, folder)).toBe(403);

    // Links minted for a path behind a symlink that leaves Jupyter's root open nothing.
    const secret = loadSecret({ dataDir: lab.roomsDir }).secret;
    for (const [scope, p] of [
      ['notebook:notebooks/shared/out/secret.txt', 'notebooks/shared/out/secret.txt'],
      ['notebook:notebooks/shared/etc/*', 'notebooks/shared/etc/passwd'],
      ['*', 'notebooks/shared/etc/passwd'],
      ['*', 'notebooks/shared/out/secret.txt'],
    ] as const) {
      const token = mintToken(secret, { room: scope, role: 'read' });
      const res = await fetch(`${lab.base}api/contents/${p}?lathe_share=${token}`);
      expect(res.status, scope).toBe(403);
      expect(await res.text(), scope).not.toMatch(/root:x:0:0:|outside-/);
    }
    // A link to all of Jupyter's root does open a link that stays inside the root.
    const all = mintToken(secret, { room: '*', role: 'read' });
    const inside = await fetch(`${lab.base}api/contents/notebooks/shared/escape/secret.txt?lathe_share=${all}`);
    expect(inside.status).toBe(200);
    expect(await inside.text()).toContain(privateSecret);
    expect(lab.log()).toMatch(
      /lathe share: refused GET \/api\/contents\/notebooks\/shared\/escape\/secret\.txt from 127\.0\.0\.1: .*leaves/,
    );
  });

  it('cannot write, execute, or change settings', async () => {
    const refused: [string, string, unknown?][] = [
      [
        'PUT',
        'api/contents/shared.ipynb',
        { type: 'notebook', format: 'json', content: JSON.parse(notebook('hacked')) },
      ],
      ['PATCH', 'api/contents/shared.ipynb', { path: 'renamed.ipynb' }],
      ['DELETE', 'api/contents/shared.ipynb'],
      ['POST', 'api/contents', { type: 'notebook' }],
      ['POST', 'api/kernels', { name: 'python3' }],
      ['POST', 'api/sessions', { path: 'shared.ipynb', type: 'notebook', name: '', kernel: { name: 'python3' } }],
      ['POST', 'api/terminals'],
      ['PUT', 'lab/api/settings/@jupyterlab/apputils-extension:themes', { raw: '{}' }],
      ['PUT', 'lab/api/workspaces/default', { data: {}, metadata: { id: 'default' } }],
      ['POST', 'api/shutdown'],
    ];
    for (const [method, p, body] of refused) {
      // Both ways a viewer authenticates: the cookie, and the share token on the request itself.
      for (const how of [
        { headers: viewer, q: '' },
        { headers: {}, q: `?lathe_share=${shareToken}` },
      ]) {
        const res = await fetch(`${lab.base}${p}${how.q}`, {
          method,
          headers: { 'Content-Type': 'application/json', ...how.headers },
          body: body === undefined ? undefined : JSON.stringify(body),
        });
        expect(res.status, `${method} ${p}`).toBe(403);
      }
      // Refused by the share link's rules (logged), not by an XSRF or auth check an owner would also hit.
      expect(lab.log(), `${method} ${p}`).toMatch(
        new RegExp(
          `lathe share: refused ${method} /${p.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} from 127\\.0\\.0\\.1: a view-only share link cannot`,
        ),
      );
      if (p.startsWith('api/') && p !== 'api/shutdown') {
        // (shutdown's error page is HTML)
        const res = await fetch(`${lab.base}${p}`, {
          method,
          headers: { 'Content-Type': 'application/json', ...viewer },
          body: body === undefined ? undefined : JSON.stringify(body),
        });
        expect(((await res.json()) as { message: string }).message, `${method} ${p}`).toMatch(/view-only share link/);
      }
    }
    // Nothing changed on disk, and no kernel or session was started.
    expect(await readFile(join(lab.root, 'shared.ipynb'), 'utf8')).toBe(original);
    expect(await (await fetch(`${lab.base}api/kernels`, { headers: lab.auth })).json()).toEqual([]);
    expect(await (await fetch(`${lab.base}api/sessions`, { headers: lab.auth })).json()).toEqual([]);

    // Execution goes over the kernel and terminal websockets: refused at the upgrade.
    const ws = lab.base.replace(/^http/, 'ws');
    expect(await upgradeStatus(`${ws}api/kernels/00000000-0000-0000-0000-000000000000/channels`, viewer)).toBe(403);
    expect(await upgradeStatus(`${ws}terminals/websocket/1`, viewer)).toBe(403);
    expect(await upgradeStatus(`${ws}api/events/subscribe`, viewer)).toBe(403);
    // Other server APIs are closed by default (here: file ids, which map any path).
    expect((await fetch(`${lab.base}api/fileid/id?path=private.ipynb`, { headers: viewer })).status).toBe(403);
    // jupyter-server-proxy's open proxy to any local port is closed to viewers; the run rooms are not.
    expect((await fetch(`${lab.base}proxy/1/`, { headers: viewer })).status).toBe(403);
    const rooms = await fetch(`${lab.base}lathe-rooms/healthz`, { headers: viewer });
    expect(rooms.status).toBe(200);
    expect(await rooms.json()).toMatchObject({ ok: true, service: 'lathe rooms' });

    // The owner (Jupyter's token) still writes, even from a browser holding a viewer cookie.
    const put = await fetch(`${lab.base}api/contents/shared.ipynb`, {
      method: 'PUT',
      headers: { ...lab.auth, ...viewer, 'Content-Type': 'application/json' },
      body: JSON.stringify({ type: 'notebook', format: 'json', content: JSON.parse(original) }),
    });
    expect(put.status).toBe(200);
    expect(((await put.json()) as { writable: boolean }).writable).toBe(true);
  });

  it('follows the notebook live over the collaboration websocket, and its edits are dropped', async () => {
    const own = await docSession(lab, 'shared.ipynb');
    const seen = await docSession(lab, 'shared.ipynb', { headers: viewer });
    expect(seen.status).toBe(200);
    expect(seen.session!.fileId).toBe(own.session!.fileId);

    const owner = new NotebookClient(lab, own.session!, { token: lab.token });
    const view = new NotebookClient(lab, seen.session!, {}, viewer);
    clients.push(owner, view);
    await Promise.all([owner.synced(), view.synced()]);
    expect(view.source(0)).toBe('x = 1');

    // The owner's edits reach the viewer live.
    const t0 = performance.now();
    const arrived = view.until(() => view.source(0) === 'x = 1 # by owner', 5000, "the owner's edit");
    owner.insert(0, 5, ' # by owner');
    await arrived;
    console.log(`owner -> viewer edit propagation: ${(performance.now() - t0).toFixed(1)} ms`);

    // The viewer's edits never reach the document: not the owner, not a fresh client, not the file.
    view.insert(0, 0, 'HACK ');
    view.insert(1, 0, 'HACK ');
    const owner2Edit = view.until(() => view.source(1) === 'HACK y = 2 # later', 5000, 'a later owner edit');
    await new Promise((r) => setTimeout(r, 300));
    owner.insert(1, 5, ' # later');
    await owner2Edit; // the viewer still receives updates after its own were dropped
    expect(owner.source(0)).toBe('x = 1 # by owner');
    expect(owner.source(1)).toBe('y = 2 # later');
    const fresh = new NotebookClient(lab, own.session!, { token: lab.token });
    clients.push(fresh);
    await fresh.synced();
    expect([fresh.source(0), fresh.source(1)]).toEqual(['x = 1 # by owner', 'y = 2 # later']);
    const deadline = Date.now() + 8000;
    let disk = '';
    // (Jupyter rewrites the file in place: wait for a complete one with the owner's edit.)
    const complete = (t: string) => {
      try {
        return JSON.parse(t) !== null;
      } catch {
        return false;
      }
    };
    while (
      Date.now() < deadline &&
      !((disk = await readFile(join(lab.root, 'shared.ipynb'), 'utf8')).includes('# later') && complete(disk))
    )
      await new Promise((r) => setTimeout(r, 200));
    expect(disk).toContain('# later');
    expect(disk).not.toContain('HACK');
    expect(lab.log()).toMatch(
      /viewer viewer-\w+ sent a document edit to \/api\/collaboration\/room\/json:notebook:\S+; dropped \(view-only share link\)/,
    );

    // A document outside the link's scope: no room for the viewer.
    const priv = await docSession(lab, 'private.ipynb');
    expect((await docSession(lab, 'private.ipynb', { headers: viewer })).status).toBe(403);
    const room = `${lab.base.replace(/^http/, 'ws')}api/collaboration/room/json:notebook:${priv.session!.fileId}?sessionId=${priv.session!.sessionId}`;
    expect(await upgradeStatus(room, viewer)).toBe(403);
  });

  it('refuses wrong, malformed, write and expired tokens, and logs why', async () => {
    const secret = loadSecret({ dataDir: lab.roomsDir }).secret;
    const now = Math.floor(Date.now() / 1000);
    const cases: [string, string, RegExp][] = [
      [
        'other secret',
        mintToken('some-other-secret-0123456789', { room: 'notebook:shared.ipynb', role: 'read' }),
        /signature is wrong/,
      ],
      ['altered', shareToken.replace(/\.(.)/, (_m, c: string) => `.${c === 'e' ? 'f' : 'e'}`), /signature is wrong/],
      ['malformed', 'lr1.not-a-token', /malformed share token/],
      [
        'expired',
        mintToken(secret, { room: 'notebook:shared.ipynb', role: 'read', ttl: 60, now: now - 3600 }),
        /share token expired at/,
      ],
      ['write role', mintToken(secret, { room: 'notebook:shared.ipynb', role: 'write' }), /needs a read token/],
      ['a run room token', mintToken(secret, { room: 'run:*', role: 'read' }), /not a notebook/],
    ];
    for (const [what, token, why] of cases) {
      const page = await fetch(`${lab.base}lab/tree/shared.ipynb?lathe_share=${encodeURIComponent(token)}`, {
        redirect: 'manual',
      });
      expect(page.status, what).toBe(403);
      expect(cookieOf(page), what).not.toMatch(/username-/); // no login cookie
      const api = await fetch(`${lab.base}api/contents/shared.ipynb?lathe_share=${encodeURIComponent(token)}`);
      expect(api.status, what).toBe(403);
      expect(((await api.json()) as { message: string }).message, what).toMatch(why);
      expect(lab.log(), what).toMatch(
        new RegExp(`lathe share: refused GET /api/contents/shared\\.ipynb from 127\\.0\\.0\\.1: .*${why.source}`),
      );
    }
    // No share link and no Jupyter token: Jupyter's own refusal.
    expect((await fetch(`${lab.base}api/contents/shared.ipynb`)).status).toBe(403);
  });

  it('never writes a share token to the log, refused or not (issue 18, item 6)', async () => {
    const secret = loadSecret({ dataDir: lab.roomsDir }).secret;
    const now = Math.floor(Date.now() / 1000);
    const tokens: Record<string, string> = {
      valid: shareToken,
      expired: mintToken(secret, { room: 'notebook:shared.ipynb', role: 'read', ttl: 60, now: now - 3600 }),
      'write role': mintToken(secret, { room: 'notebook:shared.ipynb', role: 'write' }),
      'other secret': mintToken('some-other-secret-0123456789', { room: 'notebook:shared.ipynb', role: 'read' }),
    };
    const ws = lab.base.replace(/^http/, 'ws');
    for (const [what, token] of Object.entries(tokens)) {
      const q = `lathe_share=${token}`;
      const link = `${lab.base}lab/tree/shared.ipynb?${q}`;
      const ok = what === 'valid' ? 200 : 403;
      const statuses = [
        (await fetch(link, { redirect: 'manual' })).status,
        (await fetch(`${lab.base}api/contents/private.ipynb?${q}`)).status, // outside the scope
        (await fetch(`${lab.base}api/contents/shared.ipynb?${q}`, { method: 'DELETE' })).status, // a write
        (await fetch(`${lab.base}api/contents/shared.ipynb?lathe_share=${token.replace(/\./g, '%2E')}`)).status,
        // The link as the Referer of a refused request, and of a cross-origin one.
        (await fetch(`${lab.base}api/contents/private.ipynb`, { headers: { ...viewer, Referer: link } })).status,
        (
          await fetch(`${lab.base}files/shared.ipynb`, {
            headers: { Cookie: viewer.Cookie!, Referer: `http://elsewhere.example/?${q}` },
          })
        ).status,
        await upgradeStatus(`${ws}api/kernels/00000000-0000-0000-0000-000000000000/channels?${q}`),
        (await fetch(`${lab.base}api/contents/${token}`, { headers: viewer })).status, // in the path
      ];
      expect(statuses, what).toEqual([ok, 403, 403, ok, 403, 403, 403, 403]);
    }
    const log = lab.log();
    // No line holds a token of any test in this file (the server logs at DEBUG, so every request is logged).
    const parts = Object.values(tokens).flatMap((t) => t.split('.').slice(1));
    const leaks = log
      .split('\n')
      .filter((line) => /lr1(\.|%2e)[\w-]{8,}/i.test(line) || parts.some((p) => line.includes(p)));
    expect(leaks).toEqual([]);
    // Masked, not dropped: the refusals are still logged.
    expect(log).toMatch(/403 GET \/api\/contents\/private\.ipynb\?lathe_share=\[secret\] \(127\.0\.0\.1\)/);
    expect(log).toMatch(/200 GET \/lab\/tree\/shared\.ipynb\?lathe_share=\[secret\]/);
    expect(log).toMatch(/lathe share: refused GET \/api\/contents\/\[secret\] from 127\.0\.0\.1/);
    expect(log).toMatch(/Blocking Cross Origin request from http:\/\/elsewhere\.example\/\?lathe_share=\[secret\]/);
  });

  it('signs the viewer out when the link expires', async () => {
    const secret = loadSecret({ dataDir: lab.roomsDir }).secret;
    // exp is whole seconds, so a 2 s TTL leaves at least 1 s to sign in.
    const token = mintToken(secret, { room: 'notebook:shared.ipynb', role: 'read', ttl: 2 });
    const page = await fetch(`${lab.base}lab/tree/shared.ipynb?lathe_share=${token}`, { redirect: 'manual' });
    expect(page.status).toBe(200);
    const cookie = browserHeaders(page);
    expect((await fetch(`${lab.base}api/contents/shared.ipynb`, { headers: cookie })).status).toBe(200);
    const exp = (JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString()) as { exp: number }).exp;
    await new Promise((r) => setTimeout(r, Math.max(0, exp * 1000 - Date.now()) + 100));
    expect((await fetch(`${lab.base}api/contents/shared.ipynb`, { headers: cookie })).status).toBe(403);
    expect(lab.log()).toMatch(/lathe share: viewer viewer-\w+ signed out: share token expired at/);
  });
});
