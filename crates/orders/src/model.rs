//! The order event of SPEC section 1, as serde types.
//!
//! Fields are declared in alphabetical order at every level so that serialising an `Order`
//! gives the alphabetically sorted keys the original API produced, without a detour through a
//! sorted map. Catalog strings are `Cow<'static, str>` so generating an order borrows them
//! instead of copying; a deserialised order owns them.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub type Text = Cow<'static, str>;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Order {
    pub billing_address: Address,
    pub coupon_codes: Vec<CouponCode>,
    pub currency: Text,
    pub customer: Customer,
    /// `"yes"` exactly when `shipping_status` is `Delivered`.
    pub delivered: Text,
    pub delivery_date: Option<String>,
    pub env_fee: f64,
    pub exchange_rate: f64,
    pub expected_delivery_date: Option<String>,
    pub fraud_flag: bool,
    pub fulfillment_center: Text,
    pub line_items: Vec<LineItem>,
    pub loyalty_points_used: u32,
    pub loyalty_tier: Text,
    pub order_id: Uuid,
    pub order_total: f64,
    pub partial_refund_amount: f64,
    pub payment_info: String,
    pub payment_method: Text,
    pub payment_status: Text,
    pub pet_name: Text,
    pub refunded: Text,
    pub risk_score: u32,
    pub shipments: Vec<Shipment>,
    pub shipping_address: Address,
    pub shipping_cost: f64,
    pub shipping_provider: Option<Text>,
    pub shipping_speed: Text,
    pub shipping_status: Text,
    pub status_history: Vec<StatusEntry>,
    pub subscription_frequency: Option<Text>,
    pub subscription_id: Option<Uuid>,
    pub subtotal_after_coupon: f64,
    pub subtotal_before_promos: f64,
    pub tax_amount: f64,
    pub tax_rate: f64,
    /// The event time: UTC epoch milliseconds.
    pub time_ms: i64,
    /// The same instant in New York local time, `%Y-%m-%dT%H:%M:%S.%6f`.
    pub timestamp: String,
    pub tracking_number: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Address {
    pub city: Text,
    pub state: Text,
    pub street: String,
    pub zipcode: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Customer {
    pub address: String,
    pub city: Text,
    pub customer_id: Uuid,
    pub email: String,
    pub name: String,
    pub phone: String,
    pub state: Text,
    pub zipcode: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CouponCode {
    pub name: Text,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LineItem {
    pub free_qty: u32,
    pub product: Product,
    pub quantity: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Product {
    pub category: Text,
    pub name: Text,
    pub out_of_stock: bool,
    pub price: f64,
    /// The SKU id, stable for the product across orders and runs.
    pub product_id: Text,
    pub stock: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Shipment {
    pub items: Vec<LineItem>,
    pub shipment_id: Uuid,
    pub shipment_status: Text,
    pub shipment_timestamp: String,
    pub tracking_number: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusEntry {
    pub status: Text,
    pub status_id: Uuid,
    pub timestamp: String,
}
