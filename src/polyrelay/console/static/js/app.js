// The console's shell: who is signed in, the layout (top bar, navigation, main area) and the
// hash router (#/keys, #/admin/channels, ...). Each page is a module loaded when first opened.
import { get, post, whenSignedOut } from './api.js';
import { LANGUAGES, initialLanguage, language, loadLanguage, t } from './i18n.js';
import { money } from './format.js';
import { attempt, button, h, uid } from './ui.js';

// Readable without signing in (linked from the sign-in page); signed in, they are ordinary pages.
const PUBLIC_PAGES = {
  pricing: () => import('./pages/pricing.js'),
  howto: () => import('./pages/howto.js'),
};
const USER_PAGES = {
  dashboard: () => import('./pages/dashboard.js'),
  keys: () => import('./pages/keys.js'),
  logs: () => import('./pages/logs.js'),
  tasks: () => import('./pages/tasks.js'),
  playground: () => import('./pages/playground.js'),
  redeem: () => import('./pages/redeem.js'),
  topup: () => import('./pages/topup.js'),
  billing: () => import('./pages/billing.js'),
  account: () => import('./pages/account.js'),
  ...PUBLIC_PAGES,
};
// Pages for visitors who are signed out (the links mailed to them land on verify and reset).
const VISITOR_PAGES = {
  signup: () => import('./pages/signup.js'),
  verify: () => import('./pages/verify.js'),
  forgot: () => import('./pages/forgot.js'),
  reset: () => import('./pages/reset.js'),
};
const ADMIN_PAGES = {
  'admin/channels': () => import('./pages/admin/channels.js'),
  'admin/users': () => import('./pages/admin/users.js'),
  'admin/keys': () => import('./pages/admin/keys.js'),
  'admin/groups': () => import('./pages/admin/groups.js'),
  'admin/prices': () => import('./pages/admin/prices.js'),
  'admin/redemptions': () => import('./pages/admin/redemptions.js'),
  'admin/logs': () => import('./pages/admin/logs.js'),
  'admin/system': () => import('./pages/admin/system.js'),
  'admin/health': () => import('./pages/admin/health.js'),
  'admin/orders': () => import('./pages/admin/orders.js'),
};

const root = document.getElementById('app');
const state = { me: null, cleanup: null, route: 0, layout: null };

/** The path and query of the current hash: "#/logs?model=x" → ["logs", URLSearchParams]. */
function currentRoute() {
  const [path, query = ''] = location.hash.replace(/^#\/?/, '').split('?');
  return [path || 'dashboard', new URLSearchParams(query)];
}

function languageSwitch() {
  const id = uid('language');
  const select = h(
    'select',
    { id, value: language, onchange: () => changeLanguage(select.value) },
    Object.entries(LANGUAGES).map(([code, name]) => h('option', { value: code, lang: code }, name)),
  );
  return h('div', { class: 'language' }, h('label', { for: id, class: 'sr-only' }, t('nav.language')), select);
}

async function changeLanguage(code) {
  await loadLanguage(code, { remember: true });
  if (state.me) {
    renderLayout();
    await route();
  } else {
    await showSignIn();
  }
}

async function showSignIn() {
  leavePage();
  state.me = null;
  state.layout = null;
  const [path, params] = currentRoute();
  if (path in PUBLIC_PAGES) return showPublic(path);
  const visitor = path in VISITOR_PAGES;
  document.title = `${t(visitor ? `${path}.title` : 'login.title')} · polyrelay`;
  const page = await (visitor ? VISITOR_PAGES[path]() : import('./pages/login.js'));
  root.replaceChildren(
    await page.render({ languageSwitch: languageSwitch(), onSignedIn: signedIn, params }),
    publicLinks(),
  );
  root.removeAttribute('aria-busy');
  root.querySelector('[autofocus]')?.focus();
}

function publicLinks() {
  return h(
    'nav',
    { class: 'public-links', 'aria-label': t('nav.public') },
    Object.keys(PUBLIC_PAGES).map((path) => h('a', { href: `#/${path}` }, t(`nav.${path}`))),
  );
}

/** A public page for a visitor who is not signed in: the page, the language switch and a way to sign in. */
async function showPublic(path) {
  document.title = `${t(`nav.${path}`)} · polyrelay`;
  const main = h('main', { id: 'main', class: 'public-main', tabindex: '-1' });
  const page = h('div', { class: 'page' });
  main.append(page);
  root.replaceChildren(
    h(
      'header',
      { class: 'topbar' },
      h('a', { class: 'brand', href: '#/' }, 'polyrelay'),
      h('div', { class: 'spacer' }),
      languageSwitch(),
      h('a', { class: 'sign-in', href: '#/' }, t('login.submit')),
    ),
    publicLinks(),
    main,
  );
  root.removeAttribute('aria-busy');
  const module = await PUBLIC_PAGES[path]();
  await module.render(page, { me: null, params: currentRoute()[1] });
}

async function signedIn() {
  await refreshMe();
  renderLayout();
  await route({ meIsFresh: true });
}

async function refreshMe() {
  state.me = await get('/api/me');
  state.layout?.balance.replaceChildren(balanceText());
  return state.me;
}

function balanceText() {
  const me = state.me;
  return me.unlimited ? t('common.unlimited') : money(me.available_micros ?? me.balance_micros);
}

async function signOut() {
  await attempt(async () => {
    await post('/api/auth/logout');
    location.hash = '#/dashboard';
    await showSignIn();
  });
}

function navLink(path) {
  return h('li', {}, h('a', { href: `#/${path}`, 'data-path': path }, t(`nav.${path}`)));
}

function renderLayout() {
  const admin = state.me.role === 'admin';
  const nav = h(
    'nav',
    { id: 'nav', class: 'nav', 'aria-label': t('nav.label') },
    h('ul', {}, Object.keys(USER_PAGES).map(navLink)),
    admin
      ? [h('h2', { class: 'nav-heading' }, t('nav.admin')), h('ul', {}, Object.keys(ADMIN_PAGES).map(navLink))]
      : null,
    button(t('nav.signOut'), signOut, { kind: 'quiet sign-out' }),
  );
  const menu = h(
    'button',
    { type: 'button', class: 'menu', 'aria-controls': 'nav', 'aria-expanded': 'false' },
    '☰ ',
    t('nav.menu'),
  );
  const shell = h('div', { class: 'shell' });
  const toggleMenu = (open) => {
    shell.classList.toggle('nav-open', open);
    menu.setAttribute('aria-expanded', String(open));
  };
  menu.addEventListener('click', () => toggleMenu(!shell.classList.contains('nav-open')));
  nav.addEventListener('click', (event) => event.target.closest('a') && toggleMenu(false));
  shell.addEventListener('keydown', (event) => {
    if (event.key === 'Escape' && shell.classList.contains('nav-open')) {
      toggleMenu(false);
      menu.focus();
    }
  });
  const balance = h('span', { class: 'balance' }, balanceText());
  const main = h('main', { id: 'main', tabindex: '-1' });
  shell.append(
    h(
      'header',
      { class: 'topbar' },
      menu,
      h('a', { class: 'brand', href: '#/dashboard' }, 'polyrelay'),
      h('div', { class: 'spacer' }),
      languageSwitch(),
      h('a', { class: 'who', href: '#/account' }, h('span', { class: 'name' }, state.me.name), balance),
    ),
    nav,
    main,
  );
  root.replaceChildren(shell);
  root.removeAttribute('aria-busy');
  state.layout = { nav, main, balance, toggleMenu };
}

function leavePage() {
  state.cleanup?.();
  state.cleanup = null;
}

async function route({ meIsFresh = false } = {}) {
  if (!state.me || !state.layout) {
    if (!state.me && root.getAttribute('aria-busy') === null) await showSignIn(); // a visitor between public pages
    return;
  }
  const serial = ++state.route;
  leavePage();
  const [path, params] = currentRoute();
  const { nav, main, toggleMenu } = state.layout;
  toggleMenu(false);
  for (const link of nav.querySelectorAll('a')) {
    if (link.dataset.path === path) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  const page = h('div', { class: 'page' });
  main.replaceChildren(page);
  try {
    if (!meIsFresh) await refreshMe(); // pages and the top bar show the balance as it is now
  } catch (error) {
    if (error.status !== 401) page.append(h('p', { class: 'form-error', role: 'alert' }, error.message));
    return;
  }
  if (serial !== state.route) return;
  if (state.me.must_enrol_second_factor && path !== 'account') {
    location.hash = '#/account'; // the API refuses everything else until a second factor is set up
    return;
  }
  const load = USER_PAGES[path] ?? ADMIN_PAGES[path];
  if (!load) return notice(page, 'nav.notFound', 'page.notFound');
  if (path in ADMIN_PAGES && state.me.role !== 'admin') return notice(page, 'page.notAllowedTitle', 'page.notAllowed');
  document.title = `${t(`nav.${path}`)} · polyrelay`;
  const module = await load();
  if (serial !== state.route) return;
  const cleanup = await module.render(page, {
    me: state.me,
    params,
    refreshMe,
    signOut,
    navigate: (hash) => {
      location.hash = hash;
    },
  });
  if (serial !== state.route)
    cleanup?.(); // the user moved on while the page was loading
  else state.cleanup = cleanup ?? null;
  // After an in-app navigation, start reading (and tabbing) at the new page's title; a fresh load starts at the top.
  if (serial > 1) page.querySelector('h1')?.focus({ preventScroll: true });
}

function notice(page, titleKey, textKey) {
  document.title = `${t(titleKey)} · polyrelay`;
  page.append(
    h(
      'section',
      { class: 'notice', role: 'alert' },
      h('h1', {}, t(titleKey)),
      h('p', {}, t(textKey)),
      h('p', {}, h('a', { href: '#/dashboard' }, t('page.backHome'))),
    ),
  );
}

/** Into the console when a session exists; a mailed link (verify, reset) opens its page whether or not one does. */
async function enter() {
  if (currentRoute()[0] in VISITOR_PAGES) return showSignIn();
  try {
    await signedIn();
  } catch (error) {
    if (error.status === 401) return; // whenSignedOut already shows the sign-in page
    root.replaceChildren(h('p', { class: 'form-error', role: 'alert' }, error.message));
    root.removeAttribute('aria-busy');
  }
}

async function start() {
  await loadLanguage(initialLanguage());
  whenSignedOut(showSignIn);
  window.addEventListener('hashchange', () => (state.me ? route() : enter()));
  await enter();
}

start();
