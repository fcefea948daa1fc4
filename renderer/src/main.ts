import { createApp } from 'vue'
import { z } from 'zod'
import { createPinia } from 'pinia'
import App from './App.vue'
import { createAppRouter } from './router/index.js'
import { createAppI18n } from './i18n/index.js'

// The CSP forbids eval: tell zod not to probe for `new Function` (it would only log a violation).
z.config({ jitless: true })

const app = createApp(App)
app.use(createPinia())
app.use(createAppRouter())
app.use(createAppI18n())
app.mount('#app')
