import type { Migration } from '../types.js'
import { m001Initial } from './001_initial.js'
import { m020Backup } from './020_backup.js'
import { m025Jobs } from './025_jobs.js'
import { m030Schedule } from './030_schedule.js'

/**
 * Every migration, in order. Append new ones (never edit an applied one); versions must increase.
 * Ranges by area keep parallel work from colliding: 1–9 foundation, 10–19 vault and keys,
 * 20–29 backup and restore, 30–39 policies and scheduling, 40+ next.
 */
export const MIGRATIONS: Migration[] = [m001Initial, m020Backup, m025Jobs, m030Schedule]
