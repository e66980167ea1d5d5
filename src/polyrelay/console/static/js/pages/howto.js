// How to call the gateway: its base URL and copy-paste examples for each SDK. Public: no sign-in needed.
import { get } from '../api.js';
import { t } from '../i18n.js';
import { h, loading, pageHeader, secretBox } from '../ui.js';
import { exampleModel, snippetTabs } from '../snippets.js';

export async function render(page, { me }) {
  const body = h('div');
  page.append(pageHeader(t('nav.howto')), body);
  await loading(body, async () => {
    const [info, prices] = await Promise.all([
      get('/api/public/info'),
      get(me ? '/api/me/prices' : '/api/public/prices').catch(() => ({ data: [] })),
    ]);
    const model = exampleModel(prices.data);
    return h(
      'div',
      {},
      h('p', {}, t('howto.intro')),
      secretBox(info.base_url, t('howto.baseUrl')),
      h('p', { class: 'muted small' }, t('howto.paths', { base: info.base_url })),
      h('h2', {}, t('howto.examples')),
      h('p', { class: 'muted small' }, me ? t('howto.keyFromKeys') : t('howto.keySignIn')),
      snippetTabs(info.base_url, undefined, model),
      info.public_prices || me ? h('p', {}, h('a', { href: '#/pricing' }, t('howto.seePrices'))) : null,
    );
  });
}
