//! What an account normally does, day by day, from its accepted mail:
//! new recipients (per day, and in its busiest hour), contacts reached,
//! messages, the largest recipient list. The scorer compares a message
//! with these; an account with fewer than `baseline_min_days` days of history is
//! compared with the population instead, and its explanations say so.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// Days of history kept.
pub const DAYS: usize = 30;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
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

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Baseline {
    #[serde(default)]
    pub days: VecDeque<DayStats>,
    /// The hour being counted: (hour number, new recipients so far).
    #[serde(default)]
    hour: (u64, u32),
}

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
}
