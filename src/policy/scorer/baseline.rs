//! What an account normally does, day by day, from its accepted mail:
//! new recipients (per day, and in its busiest hour), contacts reached,
//! messages, the largest recipient list. The scorer compares a message
//! with these; an account with fewer than `baseline_min_days` days of history is
//! compared with the population instead, and its explanations say so.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// Days of history kept.
pub const DAYS: usize = 30;

/// Stored as an array (a day is 6 numbers, not 6 named fields).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "DayRow", into = "DayRow")]
pub struct DayStats {
    pub day: u16,
    pub messages: u32,
    pub new_recipients: u32,
    /// New recipients of the day's busiest hour.
    pub top_hour_new: u32,
    /// Distinct contacts mailed that day.
    pub contacts: u32,
    /// The largest recipient list of the day.
    pub top_recipients: u32,
}

type DayRow = (u16, u32, u32, u32, u32, u32);

impl From<DayRow> for DayStats {
    fn from(r: DayRow) -> Self {
        Self {
            day: r.0,
            messages: r.1,
            new_recipients: r.2,
            top_hour_new: r.3,
            contacts: r.4,
            top_recipients: r.5,
        }
    }
}

impl From<DayStats> for DayRow {
    fn from(d: DayStats) -> Self {
        (
            d.day,
            d.messages,
            d.new_recipients,
            d.top_hour_new,
            d.contacts,
            d.top_recipients,
        )
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Baseline {
    #[serde(default)]
    pub days: VecDeque<DayStats>,
    /// The hour being counted: (hour number, new recipients so far).
    #[serde(default)]
    hour: (u64, u32),
    /// Hours of the week with mail, per week: (week number, one bit per
    /// hour of the week), the last `WEEKS` weeks and this one.
    #[serde(default)]
    weeks: VecDeque<(u64, Vec<u8>)>,
}

/// Weeks of active hours kept besides the current one.
const WEEKS: usize = 4;
const WEEK: u64 = 7 * 24 * 3600;

/// The account's normal, or `None` while it has too little history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Normal {
    pub top_hour_new: u32,
    pub contacts_per_day: u32,
    pub top_recipients: u32,
}

impl Baseline {
    fn today(&mut self, day: u16) -> &mut DayStats {
        if self.days.back().is_none_or(|d| d.day != day) {
            self.days.push_back(DayStats {
                day,
                ..DayStats::default()
            });
            while self.days.len() > DAYS {
                self.days.pop_front();
            }
        }
        self.days.back_mut().expect("just made")
    }

    /// An accepted message: `new` recipients never mailed before,
    /// `first_contacts` contacts mailed for the first time today.
    pub fn record(&mut self, now: u64, day: u16, recipients: u32, new: u32, first_contacts: u32) {
        let hour = now / 3600;
        if self.hour.0 != hour {
            self.hour = (hour, 0);
        }
        self.hour.1 += new;
        let hour_new = self.hour.1;
        let week = now / WEEK;
        if self.weeks.back().is_none_or(|w| w.0 != week) {
            self.weeks.push_back((week, vec![0; 21]));
            while self.weeks.len() > WEEKS + 1 {
                self.weeks.pop_front();
            }
        }
        let slot = ((now % WEEK) / 3600) as usize;
        if let Some((_, bits)) = self.weeks.back_mut()
            && bits.len() == 21
        {
            bits[slot / 8] |= 1 << (slot % 8);
        }
        let d = self.today(day);
        d.messages += 1;
        d.new_recipients += new;
        d.top_hour_new = d.top_hour_new.max(hour_new);
        d.contacts += first_contacts;
        d.top_recipients = d.top_recipients.max(recipients);
    }

    /// Days with mail before `day`.
    pub fn history_days(&self, day: u16) -> usize {
        self.days.iter().filter(|d| d.day < day).count()
    }

    /// The account's own normal from the days before `day`: the busiest
    /// value of each kind (a yearly invoice day stays normal for a month).
    pub fn normal(&self, day: u16, min_days: usize) -> Option<Normal> {
        if self.history_days(day) < min_days {
            return None;
        }
        let past = self.days.iter().filter(|d| d.day < day);
        Some(past.fold(
            Normal {
                top_hour_new: 0,
                contacts_per_day: 0,
                top_recipients: 0,
            },
            |n, d| Normal {
                top_hour_new: n.top_hour_new.max(d.top_hour_new),
                contacts_per_day: n.contacts_per_day.max(d.contacts),
                top_recipients: n.top_recipients.max(d.top_recipients),
            },
        ))
    }

    /// Whether the account usually sends at this hour of the week (the
    /// hour before or after counts too), from the weeks before this one;
    /// `None` with less than `min_weeks` earlier weeks of mail.
    pub fn usual_hour(&self, now: u64, min_weeks: usize) -> Option<bool> {
        let week = now / WEEK;
        let earlier: Vec<&Vec<u8>> = self
            .weeks
            .iter()
            .filter(|(w, bits)| *w < week && *w + WEEKS as u64 >= week && bits.len() == 21)
            .map(|(_, bits)| bits)
            .collect();
        if earlier.len() < min_weeks.max(1) {
            return None;
        }
        let slot = ((now % WEEK) / 3600) as usize;
        let near = [(slot + 167) % 168, slot, (slot + 1) % 168];
        Some(
            earlier
                .iter()
                .any(|bits| near.iter().any(|s| bits[s / 8] & (1 << (s % 8)) != 0)),
        )
    }

    /// Contacts mailed today so far.
    pub fn contacts_today(&self, day: u16) -> u32 {
        self.days
            .back()
            .filter(|d| d.day == day)
            .map_or(0, |d| d.contacts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_normal_needs_a_week_and_keeps_the_busiest_day() {
        let mut b = Baseline::default();
        for day in 0..6u16 {
            b.record(u64::from(day) * 86_400, day, 3, 2, 1);
        }
        assert_eq!(b.normal(6, 7), None);
        b.record(6 * 86_400, 6, 40, 40, 0);
        b.record(6 * 86_400 + 60, 6, 1, 5, 3);
        let n = b.normal(7, 7).unwrap();
        assert_eq!(n.top_hour_new, 45);
        assert_eq!(n.top_recipients, 40);
        assert_eq!(n.contacts_per_day, 3);
        assert_eq!(b.contacts_today(6), 3);
        for day in 7..50u16 {
            b.record(u64::from(day) * 86_400, day, 1, 0, 0);
        }
        assert_eq!(b.days.len(), DAYS);
        assert_eq!(b.normal(50, 7).unwrap().top_recipients, 1, "a month later");
    }

    #[test]
    fn the_usual_hours_of_the_week() {
        let mut b = Baseline::default();
        let monday_9 = 4 * 86_400 + 9 * 3600; // 1970-01-05 was a Monday
        for week in 0..3 {
            b.record(monday_9 + week * WEEK, 0, 1, 0, 0);
        }
        let now = monday_9 + 3 * WEEK;
        assert_eq!(b.usual_hour(now, 2), Some(true));
        assert_eq!(b.usual_hour(now + 3600, 2), Some(true), "an hour later");
        assert_eq!(b.usual_hour(now + 3 * 3600, 2), Some(false));
        assert_eq!(
            b.usual_hour(now - 9 * 3600 + 3 * 3600, 2),
            Some(false),
            "3 am"
        );
        assert_eq!(b.usual_hour(now, 4), None, "three weeks of history");
    }
}
