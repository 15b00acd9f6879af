#!/usr/bin/env ruby
# frozen_string_literal: true

# Enqueues one chat job on an llmq farm and prints its tokens as they arrive (redis-rb).
#
#   LLMQ_REDIS_URL=redis://127.0.0.1:6379 LLMQ_PREFIX=llmq ruby producer.rb MODEL "PROMPT"
#
# Prints the text as it streams, then the terminal event on a line of its own.
# Exits 0 on done, 1 on error, 2 when no terminal event came in time.

require 'json'
require 'redis'
require 'securerandom'

abort 'usage: producer.rb MODEL PROMPT' unless ARGV.length == 2
model, prompt = ARGV
url = ENV.fetch('LLMQ_REDIS_URL', 'redis://127.0.0.1:6379')
prefix = ENV.fetch('LLMQ_PREFIX', 'llmq')
timeout_s = Float(ENV.fetch('LLMQ_TIMEOUT_S', '120'))
id = "rb-#{SecureRandom.hex(16)}"
$stdout.sync = true

subscriber = Redis.new(url: url)
producer = Redis.new(url: url)
job = { id: id, model: model, messages: [{ role: 'user', content: prompt }] }
status = 2

begin
  # subscribe_with_timeout gives up when no message comes for that long.
  subscriber.subscribe_with_timeout(timeout_s, "#{prefix}:{#{id}}:tokens") do |on|
    # Redis confirmed the subscription: only now may the job exist, so no token is missed.
    on.subscribe { producer.lpush("#{prefix}:{chat}:queue", JSON.generate(job)) }
    on.message do |_channel, payload|
      # A payload holds one or more whole NDJSON lines.
      payload.each_line(chomp: true) do |line|
        event = JSON.parse(line)
        case event['type']
        when 'chunk'
          print event['text']
        when 'retry'
          warn "\n[attempt #{event['attempt']} starts over: #{event['reason']}]"
        when 'done', 'error'
          puts
          puts line
          status = event['type'] == 'done' ? 0 : 1
          subscriber.unsubscribe
          break
        end
      end
    end
  end
rescue Redis::TimeoutError
  warn "no event for #{id} within #{timeout_s} s"
end
exit status
